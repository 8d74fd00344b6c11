"""Zero-shot classification with the ITC towers, optionally re-ranked by the ITM head.

Each class is described by several prompts (templates filled with the class's names and, say, the
sequence). As CLIP does (Radford et al. 2021, "prompt ensembling"), a class's text feature is the mean of
its prompts' L2-normalised features, renormalised; an image's class logits are its cosine similarities
divided by the model's contrastive temperature, and their softmax the probabilities.

With ``itm_top_k`` the ``k`` best classes of each image are re-scored as BLIP's retrieval evaluation
scores its top candidates: ITM "match" logit (mean over the class's prompts nearest the image, 16 by
default) plus the ITC cosine; the probabilities are a softmax over those ``k`` classes and 0 for the others.

    clf = ZeroShotClassifier(model, {"glioma": ["axial flair mri showing a glioma", ...], ...})
    probs = clf.predict(images)                       # (B, C)
    clf.calibrate(unlabelled_batches)                 # optional: centre each class's scores (see there)

Class files (``configs/zeroshot/*.yaml``) are expanded by :func:`expand_prompts` from their parsed dict.
"""
from __future__ import annotations

import itertools
import re
import string
from typing import Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from models import text_fast

_FIELD = re.compile(r"{(\w+)}")


def _as_list(value, where: str) -> list[str]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values or not all(isinstance(v, str) and v.strip() for v in values):
        raise ValueError(f"{where} must be a non-empty string or list of non-empty strings")
    return values


def _fill(template: str, fields: Mapping[str, list[str]], where: str) -> list[str]:
    names = list(dict.fromkeys(_FIELD.findall(template)))  # in order of appearance
    unknown = [n for n in names if n not in fields]
    if unknown:
        raise ValueError(f"{where}: template {template!r} uses {{{unknown[0]}}}, which is neither 'class' nor "
                         f"one of the variables {sorted(k for k in fields if k != 'class')}")
    out = []
    for combo in itertools.product(*(fields[n] for n in names)):
        out.append(string.Formatter().vformat(template, (), dict(zip(names, combo))))
    return out


def expand_prompts(spec: Mapping, where: str = "class file") -> dict[str, list[str]]:
    """Class name -> its prompts, from a class file's dict::

        templates: ["axial {sequence} MRI showing {class}", ...]      # {class} and any variable
        variables: {sequence: [FLAIR, T2-weighted]}                    # optional
        classes:
          glioma: [glioma, diffuse glioma]        # names that fill {class} (one string or a list)
          normal: {prompts: ["axial {sequence} MRI of a normal brain"]}   # own prompts instead of templates
          infarct: {names: [infarct], templates: ["{class} on diffusion-weighted MRI"]}

    Without templates, a class's names are its prompts. Each template is filled with every combination
    of names and variable values; repeated prompts count once.
    """
    if not isinstance(spec, Mapping) or not isinstance(spec.get("classes"), Mapping) or not spec["classes"]:
        raise ValueError(f"{where} must hold a 'classes' mapping of class name -> names or prompts")
    unknown = sorted(set(spec) - {"templates", "variables", "classes", "description"})
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r} (keys: templates, variables, classes, description)")
    variables = spec.get("variables") or {}
    if not isinstance(variables, Mapping):
        raise ValueError(f"{where}: 'variables' must map a name to a list of values")
    fields = {str(k): _as_list(v, f"{where}: variable {k!r}") for k, v in variables.items()}
    default_templates = spec.get("templates")
    classes = {}
    for name, entry in spec["classes"].items():
        at = f"{where}: class {name!r}"
        if isinstance(entry, Mapping):
            extra = sorted(set(entry) - {"names", "templates", "prompts"})
            if extra:
                raise ValueError(f"{at}: unknown key {extra[0]!r} (keys: names, templates, prompts)")
            names = _as_list(entry.get("names", str(name)), f"{at} names")
            templates = entry.get("templates", default_templates if "prompts" not in entry else [])
            own = _as_list(entry["prompts"], f"{at} prompts") if "prompts" in entry else []
        else:
            names, templates, own = _as_list(entry if entry else str(name), at), default_templates, []
        templates = (_as_list(templates, f"{at} templates") if templates else []) + own
        # Without any template a class's names are its prompts.
        prompts = [p for t in templates or ["{class}"] for p in _fill(t, {**fields, "class": names}, at)]
        classes[str(name)] = list(dict.fromkeys(prompts))
    return classes


def class_features(text_feat: Tensor, class_index: Tensor, num_classes: int) -> Tensor:
    """Prompt features (P, E), L2-normalised, and each prompt's class (P,) -> class features (C, E):
    the per-class mean, renormalised."""
    sums = torch.zeros(num_classes, text_feat.shape[1], dtype=text_feat.dtype, device=text_feat.device)
    sums.index_add_(0, class_index, text_feat)
    return F.normalize(sums, dim=-1)


@torch.no_grad()
def itm_rerank(model, image_embeds: Tensor, itc_sim: Tensor, input_ids: Tensor, attention_mask: Tensor,
               class_index: Tensor, k: int, prompt_sim: Tensor | None = None, per_class: int = 0) -> Tensor:
    """Scores (B, C): for each image's top ``k`` classes by ``itc_sim`` (B, C), the mean ITM match logit
    over the class's prompts plus the cosine; -inf elsewhere.

    image_embeds: (B, 1+N, Dv). input_ids, attention_mask: (P, L) for all prompts; class_index: (P,).
    With ``prompt_sim`` (B, P), the image's cosine to each prompt, and ``per_class`` > 0, only that many
    prompts of each class, those nearest the image, are re-scored: ITM costs a text-encoder pass per
    prompt, and large ensembles (hundreds of prompts a class) would make it the bulk of the work.
    Each image's cross-attention keys/values are computed once and serve all its candidate prompts.
    """
    batch, num_classes = itc_sim.shape
    k = min(k, num_classes)
    scores = torch.full_like(itc_sim, float("-inf"))
    for b in range(batch):
        top = itc_sim[b].topk(k).indices
        rows = []
        for c in top.tolist():
            members = (class_index == c).nonzero().squeeze(1)
            if prompt_sim is not None and 0 < per_class < len(members):
                members = members[prompt_sim[b, members].topk(per_class).indices]
            rows.append(members)
        rows = torch.cat(rows)
        kv = model.text_encoder.cross_kv(image_embeds[b:b + 1])
        hidden = text_fast.first_hidden_one_image(model.text_encoder, kv, attention_mask[rows],
                                                  input_ids=model.enc_ids(input_ids[rows]))  # itm_logits' [ENC]
        match = model.itm_head(hidden)[:, 1].float()
        sums = torch.zeros(num_classes, dtype=match.dtype, device=match.device).index_add_(0, class_index[rows], match)
        counts = torch.bincount(class_index[rows], minlength=num_classes).clamp_min(1).to(match.dtype)
        scores[b, top] = sums[top] / counts[top] + itc_sim[b, top]
    return scores


class ZeroShotClassifier:
    """Class prompts encoded once; :meth:`predict` gives class probabilities for image batches."""

    def __init__(self, model, classes: Mapping[str, Sequence[str]], itm_top_k: int = 0, batch_size: int = 256,
                 clean: Callable[[str], str] | None = None, itm_prompts: int = 16):
        """``clean`` is applied to every prompt before tokenizing: pass the caption cleaning the model was
        trained with (``data.captions.pre_caption``), so that prompts look like training text.
        ``itm_prompts``: prompts per class re-scored by ITM, those nearest the image (0: all)."""
        if not classes:
            raise ValueError("no class to classify into")
        self.model, self.names, self.itm_top_k, self.itm_prompts = model, list(classes), int(itm_top_k), itm_prompts
        prompts = [p for name in self.names for p in classes[name]]
        self.class_index = torch.tensor([i for i, name in enumerate(self.names) for _ in classes[name]])
        device = next(model.parameters()).device
        batch = model.tokenize([clean(p) if clean else p for p in prompts], device)
        self.input_ids, self.attention_mask = batch["input_ids"], batch["attention_mask"]
        self.class_index = self.class_index.to(device)
        with torch.no_grad():
            feats = torch.cat([model.encode_text(self.input_ids[i:i + batch_size],
                                                 self.attention_mask[i:i + batch_size])[1]
                               for i in range(0, len(prompts), batch_size)])
        self.prompt_feat = feats.float()  # (P, E)
        self.bias: Tensor | None = None  # per-class offsets from :meth:`calibrate`
        self.class_feat = class_features(self.prompt_feat, self.class_index, len(self.names))  # (C, E)

    @torch.no_grad()
    def calibrate(self, batches: Iterable[Tensor]) -> Tensor:
        """Learn each class's mean cosine over unlabelled images (B, 3, H, W) and subtract it from then on.

        Prompt ensembles of a weak model often differ by a constant offset: one class's feature lies
        nearer every image, and wins every argmax although each class's column ranks its own images
        first (AUROC near 1, accuracy near a constant predictor's). Centring each class's scores over a
        reference set of images (a validation split, or the images being classified) removes that
        offset without labels; it assumes the reference set holds the classes in roughly even shares.
        Returns the offsets (C,).
        """
        self.bias = None
        total, count = torch.zeros_like(self.class_feat[:, 0]), 0
        for images in batches:
            image_feat = self.model.encode_image(images.to(self.class_feat.device))[1].float()
            total += (image_feat @ self.class_feat.T).sum(0)
            count += images.shape[0]
        if count == 0:
            raise ValueError("calibration needs at least one image")
        self.bias = total / count
        return self.bias

    @torch.no_grad()
    def logits(self, images: Tensor) -> Tensor:
        """images (B, 3, H, W) -> scores (B, C): ITC cosine (less the calibration offsets) / temperature,
        or the ITM re-ranked scores."""
        image_embeds, image_feat = self.model.encode_image(images.to(self.class_feat.device))
        sim = image_feat.float() @ self.class_feat.T  # (B, C) cosines
        if self.bias is not None:
            sim = sim - self.bias
        if self.itm_top_k > 0:
            return itm_rerank(self.model, image_embeds, sim, self.input_ids, self.attention_mask, self.class_index,
                              self.itm_top_k, image_feat.float() @ self.prompt_feat.T, self.itm_prompts)
        return sim / self.model.temp.float()

    def predict(self, images: Tensor) -> Tensor:
        """images (B, 3, H, W) -> class probabilities (B, C), rows summing to 1."""
        return self.logits(images).softmax(dim=-1)
