"""Maps the backend names used everywhere (config, CLI, API, checkpoints, UI) to attention classes."""
from models.config import ATTENTIONS
from models.memsizer import MemSizerAttention
from models.transformer import SoftmaxAttention

ATTENTION_CLASSES = {"transformer": SoftmaxAttention, "memsizer": MemSizerAttention}
assert tuple(ATTENTION_CLASSES) == ATTENTIONS, "registry and config disagree on backend names"
BACKENDS = ATTENTIONS
DISPLAY_NAMES = {"transformer": "Transformer", "memsizer": "MemSizer"}
