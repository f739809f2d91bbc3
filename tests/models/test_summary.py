"""Paper-config parameter counts follow from the architecture formulas."""
import json

from models.config import ModelConfig
from models.summary import main, parameter_breakdown


def softmax_attention_params(d):
    return 4 * (d * d + d)  # Q, K, V, output projections with biases


def memsizer_attention_params(d, heads, k):
    return (d * heads * k + heads * k) + (d * k + k) + (d * d + d) + 2 * k + 2 * d  # Phi, W_l, W_r, two LNs


def test_paper_config_counts_match_formulas(capsys):
    d, ff, heads, vocab = 512, 2048, 8, 98
    ffn = 8 * (d * ff + ff + ff * d + d)
    norms = 4 * 2 * (2 * d) + 4 * 3 * (2 * d) + 2 * (2 * d)
    abacus = (160 + 1) * d  # a digit-place row per source position, and row 0 for non-digits
    shared = vocab * d + abacus + ffn + norms + (d * vocab + vocab)
    transformer = shared + 12 * softmax_attention_params(d)
    memsizer = shared + 8 * memsizer_attention_params(d, heads, 32) + 4 * memsizer_attention_params(d, heads, 4)
    assert parameter_breakdown(ModelConfig(backend="transformer"))["total"] == transformer == 29_610_594
    assert parameter_breakdown(ModelConfig(backend="memsizer"))["total"] == memsizer == 21_423_634
    main(["--json"])
    table = json.loads(capsys.readouterr().out)
    assert table["memsizer"]["attention"] < table["transformer"]["attention"] / 2
    assert table["memsizer"]["feed_forward"] == table["transformer"]["feed_forward"] == ffn
    assert table["transformer"]["embeddings"] == vocab * d + abacus, "the abacus table is an embedding"
