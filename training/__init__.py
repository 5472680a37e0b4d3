"""Installed as `fedrouter.training`; importable under that name only.

The folder sits at the top of a checkout, so it would also import as `training` wherever the checkout's
root is on sys.path (pytest's rootdir, a PYTHONPATH): every module would then exist twice, with two
copies of each class (an `except GatewayError` missing the other copy's errors). Refused here.
"""

if __name__ != "fedrouter.training":
    raise ImportError(f"import fedrouter.training, not {__name__!r} (one name per module: see {__file__})")
