"""A backend is one file: a throwaway one, registered from this test, shows up everywhere."""
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from models import registry
from models.backend import AttentionState, Backend
from models.checkpoint import load_checkpoint, save_checkpoint
from models.tokenizer import BOS, Tokenizer
from tests.conftest import tiny_model

Q = "What is the tens digit of 89290?"


# ---- the whole backend: settings, state, attention, description ----
@dataclass(frozen=True)
class MeanSettings:
    scale: float = 1.0


@dataclass
class MeanState(AttentionState):
    total: torch.Tensor | None = None  # running sum of the values seen (B, d)
    count: int = 0


class MeanAttention(nn.Module):
    """Attends uniformly: the mean of the (projected) values it may see."""

    def __init__(self, config, role):
        super().__init__()
        self.role, self.scale = role, config.settings.scale
        self.v_proj = nn.Linear(config.d_model, config.d_model)

    def new_state(self):
        return MeanState()

    def forward(self, x, context=None, context_pad=None, state=None):
        if self.role in ("encoder", "cross"):
            source = x if self.role == "encoder" else context
            keep = (~context_pad)[:, :, None].to(x.dtype)
            mean = (self.v_proj(source) * keep).sum(1) / keep.sum(1).clamp(min=1)  # (B, d)
            return self.scale * mean[:, None].expand_as(x)
        values = self.v_proj(x).cumsum(1)  # causal: the mean over the prefix
        past, count = (state.total, state.count) if state is not None else (None, 0)
        if past is not None:
            values = values + past[:, None]
        if state is not None:
            state.total, state.count = values[:, -1], count + x.shape[1]
        steps = torch.arange(count + 1, count + x.shape[1] + 1, dtype=x.dtype)
        return self.scale * values / steps[None, :, None]


TOY = Backend(name="toymean", display_name="ToyMean", paper="(a test)", summary="Uniform attention.",
              attention=MeanAttention, settings=MeanSettings, shipped=False)


@pytest.fixture
def toy():
    registry.register(TOY)
    yield TOY
    registry.unregister(TOY.name)


def test_model_decodes_incrementally_like_the_parallel_pass(toy, tokenizer):
    model = tiny_model("toymean", settings={"scale": 0.5})
    src = tokenizer.batch_questions([Q, "What is the units digit of 7?"])
    tgt_in = torch.cat([torch.full((2, 1), BOS), torch.randint(3, 98, (2, 6))], dim=1)
    with torch.no_grad():
        full, _ = model(src, tgt_in)
        state = model.start_decoding(src)
        steps = torch.stack([model.decode_step(tgt_in[:, t:t + 1], state) for t in range(7)], dim=1)
    assert torch.allclose(steps, full, atol=1e-5)
    assert state.self_attention_nbytes() == 2 * 2 * 32 * 4  # layers x (B, d) float32: constant


def test_train_cli_takes_its_name_and_settings(toy, tmp_path):
    from training import train
    args = train.parse_args(["--model", "toymean", "--toymean-scale", "0.25"])
    config = train.model_config(args, Tokenizer())
    assert config.backend == "toymean" and config.settings == MeanSettings(0.25)
    with pytest.raises(SystemExit):
        train.parse_args(["--model", "nosuch"])


def test_checkpoint_round_trip_keeps_settings(toy, tmp_path):
    save_checkpoint(tiny_model("toymean", settings={"scale": 0.5}), tmp_path / "toymean", Tokenizer())
    model, _, config = load_checkpoint(tmp_path / "toymean")
    assert config["model"] == "toymean" and model.config.settings.scale == 0.5


@pytest.fixture
def toy_client(toy, tiny_checkpoints, tmp_path):
    """An app over the tiny checkpoints plus one for the toy backend."""
    import shutil

    from app import create_app
    for name in registry.names():
        if (tiny_checkpoints / name).exists():
            shutil.copytree(tiny_checkpoints / name, tmp_path / name)
    save_checkpoint(tiny_model("toymean"), tmp_path / "toymean", Tokenizer())
    return create_app({"TESTING": True, "CHECKPOINT_DIR": str(tmp_path)}).test_client()


def test_api_page_and_models_pick_it_up(toy_client):
    body = toy_client.post("/answer", json={"question": Q, "model": "toymean"}).json
    assert body["model"] == "toymean" and body["check"]["expected"] == "9"
    assert "toymean" in toy_client.post("/answer", json={"question": Q, "model": "gpt"}).json["error"]["message"]
    rows = {m["name"]: m for m in toy_client.get("/models").json["models"]}
    assert rows["toymean"]["ready"] and rows["toymean"]["display_name"] == "ToyMean"
    page = toy_client.post("/", data={"question": Q, "model": "all"}).get_data(as_text=True)
    assert '<option value="toymean"' in page and "Compare all" in page
    assert '<div class="result' in page and 'data-model="toymean">' in page and "<h2>ToyMean</h2>" in page
    spec = toy_client.get("/openapi.json").json
    assert "toymean" in spec["components"]["schemas"]["SingleRequest"]["properties"]["model"]["enum"]


def test_unshipped_backend_without_checkpoint_does_not_block_readiness(toy, tiny_checkpoints):
    from app import create_app
    client = create_app({"TESTING": True, "CHECKPOINT_DIR": str(tiny_checkpoints)}).test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json["models"]["toymean"] is False
    assert "train one with `python -m training.train --model toymean`" in ready.json["errors"]["toymean"]
    page = client.get("/").get_data(as_text=True)
    assert "not shipped: train it with <code>python -m training.train --model toymean</code>" in page
    row = next(m for m in client.get("/models").json["models"] if m["name"] == "toymean")
    assert row["train_command"] == "python -m training.train --model toymean" and not row["shipped"]
    down = client.post("/answer", json={"question": Q, "model": "toymean"})
    assert down.status_code == 503 and down.json["error"]["code"] == "model_unavailable"


def test_required_models_decide_readiness(toy, tiny_checkpoints):
    from app import create_app
    app = create_app({"TESTING": True, "CHECKPOINT_DIR": str(tiny_checkpoints), "REQUIRED_MODELS": "toymean"})
    assert app.test_client().get("/readyz").status_code == 503


def test_benchmark_tables_pick_it_up(toy):
    from benchmarks import report
    size = report.size_table()
    header = " | ".join(b.display_name for b in registry.backends())
    assert f"| parameters at the paper config | {header} |" in size and header.endswith("ToyMean")
    assert "not shipped" in size
