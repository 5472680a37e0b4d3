"""Export round trip: an adapter written by training/export.py gives, loaded by PEFT from disk,
the same logits as the LoRA in training (rank r and the matched rank K·r with its scaled alpha)."""

import numpy as np
import pytest
import torch

from fedrouter.router.embed import make_embedder
from fedrouter.router.release import load_release
from fedrouter.training.config import TrainConfig
from fedrouter.training.export import export_release, save_adapter
from fedrouter.training.strategies import Export
from tests.tiny import tiny_llama_in_memory


def _base():
    return tiny_llama_in_memory(seed=0)


@pytest.mark.parametrize("r,alpha", [(2, 4), (8, 16)])  # rank r, and K·r with alpha K·alpha (K = 4)
def test_exported_adapter_gives_the_training_logits(tmp_path, r, alpha):
    from peft import PeftModel

    from fedrouter.training.model import lora_state, with_lora

    trained = with_lora(_base(), r, alpha, ["q_proj", "v_proj"], seed=1)
    with torch.no_grad():  # B starts at zero: give it values, as training would
        for name, p in trained.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn_like(p) * 0.5)
    ids = torch.randint(0, 64, (2, 9))
    with torch.no_grad():
        expected = trained(ids).logits
    folder = save_adapter(tmp_path / "a", lora_state(trained), r, alpha, ["q_proj", "v_proj"], "tiny")
    loaded = PeftModel.from_pretrained(_base(), str(folder)).eval()
    with torch.no_grad():
        got = loaded(ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        assert not torch.allclose(_base()(ids).logits, got)  # the adapter changes the model


def test_export_release_records_client_clusters(tmp_path):
    from fedrouter.training.model import lora_state, with_lora

    state = lora_state(with_lora(_base(), 2, 4, ["q_proj"]))
    c = np.eye(2, 64, dtype=np.float32)
    parts = Export({"a": state, "b": state}, {"a": 2, "b": 2}, c, ["a", "b"], [3, 4], {"0": {0: 3}, "1": {0: 1, 1: 4}})
    cfg = TrainConfig(out=str(tmp_path), lora_r=2, lora_alpha=4, lora_targets="q_proj")
    rel = export_release(cfg, make_embedder("hash", "").info, "tiny", parts, {"strategy": "test"})
    again = load_release(tmp_path / "releases" / "latest")
    assert rel.id == "v1" and again.manifest.client_clusters == {"0": {0: 3}, "1": {0: 1, 1: 4}}
    assert [x.size for x in again.manifest.clusters] == [3, 4]
