"""Tiny models made by the tests themselves: a random Llama (head_dim 64, which vLLM's CPU
attention accepts), a byte-level BPE tokenizer trained on the spot with a chat template, and
random LoRA adapters that visibly change the model's output. Nothing is downloaded."""

from __future__ import annotations

import json
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

TASK_EXAMPLES = {
    "math": [
        "What is 12 plus 30?",
        "Compute 7 times 8.",
        "What is 45 minus 17?",
        "Add 19 and 23.",
        "What is the sum of 5, 9 and 11?",
        "Multiply 6 by 14.",
        "What is 81 divided by 9?",
        "Calculate 100 minus 37.",
    ],
    "geo": [
        "What is the capital of France?",
        "Which city is the capital of Japan?",
        "Name the capital city of Canada.",
        "What is the capital of Italy?",
        "Which country has Madrid as its capital?",
        "What is the capital of Kenya?",
        "Tell me the capital of Australia.",
        "Which city is the capital of Brazil?",
    ],
    "sentiment": [
        "Review: I loved this movie, it was wonderful. Sentiment?",
        "Review: The film was boring and far too long. Sentiment?",
        "Review: A delightful, heartwarming story. Sentiment?",
        "Review: Terrible acting and a dull plot. Sentiment?",
        "Review: One of the best films I have seen this year. Sentiment?",
        "Review: I walked out halfway, it was awful. Sentiment?",
        "Review: Charming characters and a great soundtrack. Sentiment?",
        "Review: A waste of two hours. Sentiment?",
    ],
}

# Held-out prompts per task: not in the examples, near them in meaning.
TASK_PROBES = {
    "math": ["What is 14 plus 27?", "Compute 9 times 6."],
    "geo": ["What is the capital of Germany?", "Which city is the capital of Egypt?"],
    "sentiment": ["Review: An amazing, moving film. Sentiment?", "Review: Dreadful and dull. Sentiment?"],
}


def make_tokenizer(out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [p for ps in TASK_EXAMPLES.values() for p in ps] * 4 + ["user assistant system the a of and"]
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)


def make_tiny_llama(out: Path, seed: int = 0) -> Path:
    """A 2-layer random Llama with hidden 128, 2 heads of 64, saved with its tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    make_tokenizer(out)
    tok = AutoTokenizer.from_pretrained(out)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=512,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
        dtype="bfloat16",
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # larger weights than the default init: sharper, more varied greedy outputs
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.2)
    model.to(torch.bfloat16).save_pretrained(out)
    return out


def make_lora(base: Path, out: Path, seed: int, r: int = 8) -> Path:
    """A random (not zero-initialised) LoRA on q/k/v/o, so outputs differ from the base model's."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(
        r=r, lora_alpha=2 * r, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], init_lora_weights=False
    )
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.5)
    peft_model.save_pretrained(out)
    return out


def write_examples(folder: Path, examples: dict[str, list[str]] = TASK_EXAMPLES) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for task, prompts in examples.items():
        files[task] = folder / f"{task}.jsonl"
        files[task].write_text("".join(json.dumps({"prompt": p, "task": task}) + "\n" for p in prompts))
    return files


def make_tiny_sentence_transformer(out: Path, seed: int = 0) -> Path:
    """A 2-layer random BERT with a WordPiece tokenizer trained on the spot, saved as a
    sentence-transformers folder (Transformer + mean Pooling + Normalize), like all-MiniLM-L6-v2."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as st
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    corpus = [p for ps in TASK_EXAMPLES.values() for p in ps] * 4
    tok.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    hf = out / "hf"
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    )
    fast.save_pretrained(hf)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(hf)
    body = st.Transformer(str(hf), max_seq_length=64)
    model = SentenceTransformer(modules=[body, st.Pooling(64, "mean"), st.Normalize()], device="cpu")
    model.save(str(out / "st"))
    return out / "st"


def tiny_llama_in_memory(seed: int = 0):
    """An even smaller random Llama (vocab 64, hidden 32, one layer), in memory only: for tests of
    LoRA math that never tokenize or serve."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    return LlamaForCausalLM(config).eval()
