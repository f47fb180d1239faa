"""Training DMDNet as the paper describes it, sized for a CPU.

The generic dictionary goes through the paper's four stages (section 3.1):

1. **Initialisation** (eq. 2): the dictionary *is* the extractor's keys and values of Y fixed sharp
   faces, so the loss trains the extractor through it. Re-encoding all Y faces every step is too slow
   on a CPU, so each step re-encodes ``refresh_items`` of them with gradients and reuses the others'
   cached (detached) features; every item is refreshed every Y / refresh_items steps.
2. **Forward update** (eq. 3): ``value* = γv·value + (1−γv)·value_gt`` (keys likewise) with learnable
   γ, towards the extractor's features of ground-truth faces. The item updated is the one whose key is
   closest to the ground truth's (the item a query would read most). A face never reads an item
   updated with its own ground truth: within a batch each face reads the items updated by the *other*
   faces (that is where γ gets its gradient), and the persistent dictionary takes all updates after
   the step.
3. **Backward update** (eq. 4–5): the keys and values become parameters optimised directly with a
   learning rate 100x smaller than the network's (2e-6 vs 2e-4 in the paper).
4. **Buffer**: the dictionary is frozen into the model's buffers and the network is fine-tuned.

The extractor of the generic dictionary (F_gen) and of the specific one (F_spe) are the same module
(``E_hq`` + ``*_KV``): the paper initialises F_spe from F_gen and the released model keeps one.

Losses (eq. 11–18): 300·MSE + perceptual + 0.1·style + the multi-scale SNGAN hinge with λ_r = {4, 1,
0.5}. With a pretrained VGG19 the perceptual and style terms are the paper's; without one the
perceptual term is dlib's face net (:class:`~facerestore_cli.train.objectives.FaceLosses`: the face
chip at weight 1 and the full-resolution centre at 0.5) and the style term the Laplacian-band stand-in
of :mod:`facerestore_cli.train.losses`. Both cases add the face net's identity term (weight 1) and the
chroma term (weight 10); :data:`DMDNET_FACE_WEIGHTS` says why these sizes. The adversarial weight is
``adv_scale`` times the paper's, ramped geometrically from ``adv_scale_from`` (0.02, what the first
shipped weights were trained at) over ``adv_ramp`` steps (:class:`~facerestore_cli.train.objectives.
AdversarialRamp`). ``low_freq`` adds our :func:`~facerestore_cli.train.losses.low_frequency_loss`
(not in the paper; 0 leaves it out). ``init`` starts from exported weights: their generic dictionary
comes along, so a fine-tuning run uses ``stage_steps = (0, 0, 0, N)``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from facerestore_cli.models.dmdnet import SCALES, Config, DMDNet, component_boxes, dict_key, mem_buffer_name
from facerestore_cli.train import common
from facerestore_cli.train.data import (
    read_rgb,
    reference_view,
)
from facerestore_cli.train.discriminators import MultiScaleSNDiscriminator
from facerestore_cli.train.losses import (
    DMDNetLossWeights,
    hinge_d_loss,
    hinge_g_loss,
    low_frequency_loss,
    mse_loss,
)
from facerestore_cli.train.objectives import FaceLossWeights

#: Face-net and chroma weights for DMDNet without VGG19. Measured on the first shipped weights' x8
#: outputs (4 training faces), as the norm of each term's gradient on the output: 300·MSE 0.029,
#: face-chip perceptual 0.0079 per unit weight, full-resolution centre 0.021, identity 0.010, chroma
#: 0.00027, the SSIM + Sobel stand-in 0.0044 and the style stand-in at 0.1 only 0.0004. At these
#: weights the face terms together pull about as hard as the pixel term (27 %, 36 % and 35 % of it),
#: where the stand-in pulled 15 %; chroma at 10 is 9 % on a smooth tint and much more on a speck
#: (its hinge multiplies the pull of every pixel more than ``tau`` off by 5).
DMDNET_FACE_WEIGHTS = FaceLossWeights(perceptual=1.0, detail=0.5, identity=1.0, chroma=10.0)

STAGES = ("init", "forward", "backward", "buffer")


@dataclass
class DMDNetTrainOptions(common.TrainOptions):
    config: Config = field(default_factory=Config.compact)
    stage_steps: tuple[int, int, int, int] = (4000, 3000, 3000, 2000)
    dict_lr_ratio: float = 0.01
    refs_choices: tuple[int, ...] = (0, 1, 2)
    refs_probs: tuple[float, ...] = (0.3, 0.3, 0.4)
    refresh_items: int = 2
    gamma_init: float = 0.9
    disc_width: int = 16

    @property
    def total_steps(self) -> int:
        return sum(self.stage_steps)

    def stage(self, step: int) -> str:
        edge = 0
        for name, n in zip(STAGES, self.stage_steps, strict=True):
            edge += n
            if step < edge:
                return name
        return STAGES[-1]


PARTS_SIZES = [(part, size) for size, _ in SCALES for part in ("LE", "RE", "MO")]
NAMES = [dict_key(p, s, k) for p, s in PARTS_SIZES for k in ("Key", "Value")]


class GenericDictionary(nn.Module):
    """The generic dictionary while it trains (stages 1–3), outside the model's buffers."""

    def __init__(self, model: DMDNet, gamma_init: float) -> None:
        super().__init__()
        self.cache: dict[str, Tensor] = {k: v.detach().clone().float() for k, v in model.generic_dictionary().items()}
        logit = math.log(gamma_init / (1 - gamma_init))
        self.gamma = nn.ParameterDict({k: nn.Parameter(torch.tensor(logit)) for k in NAMES})
        self.params: nn.ParameterDict | None = None

    def state(self) -> dict:
        out = {"cache": self.cache, "gamma": {k: v.detach() for k, v in self.gamma.items()}}
        if self.params is not None:
            out["params"] = {k: v.detach() for k, v in self.params.items()}
        return out

    def load(self, state: dict) -> None:
        device = next(iter(self.cache.values())).device  # checkpoints load on the CPU
        self.cache = {k: v.float().to(device) for k, v in state["cache"].items()}
        for k, v in state["gamma"].items():
            self.gamma[k].data.copy_(v)
        if "params" in state:
            self.make_parameters()
            for k, v in state["params"].items():
                self.params[k].data.copy_(v)

    def make_parameters(self) -> nn.ParameterDict:
        if self.params is None:
            self.params = nn.ParameterDict({k: nn.Parameter(v.clone()) for k, v in self.cache.items()})
        return self.params

    def current(self) -> dict[str, Tensor]:
        if self.params is not None:
            return {k: v.detach() for k, v in self.params.items()}
        return self.cache

    def write_into(self, model: DMDNet) -> None:
        """Copy the current dictionary into the model's buffers (validation, export, stage 4)."""
        current = self.current()
        for part, size in PARTS_SIZES:
            for kind in ("Key", "Value"):
                getattr(model, mem_buffer_name(part, size, kind)).copy_(current[dict_key(part, size, kind)])


def _boxes(landmarks: list[np.ndarray]) -> Tensor:
    return torch.from_numpy(np.stack([component_boxes(lm) for lm in landmarks]))


def _stack_specific(flat: dict[str, Tensor], batch: int, refs: int) -> dict[str, Tensor]:
    return {k: v.reshape(batch, refs, *v.shape[1:]) for k, v in flat.items()}


class DMDNetTrainer(common.TrainerBase):
    """DMDNet's four training stages (dictionary from the extractor, forward update, backward update,
    frozen buffers) on the shared loop; references are other views of each face (see ``data``)."""

    method = "dmdnet"
    main_restorer = "generic"
    default_adv_from = 0.02

    def __init__(self, opts: DMDNetTrainOptions) -> None:
        self.setup(opts, "dmdnet")
        train_files = self.train_data.files
        self.model = DMDNet(opts.config)
        if opts.init:
            self.load_init(self.model)
        self.model = self.model.to(self.device, memory_format=torch.channels_last)
        self.average_weights()
        self._real_marks: dict[Path, np.ndarray] = {}
        disc = MultiScaleSNDiscriminator(width=opts.disc_width)
        self.disc = disc.to(self.device, memory_format=torch.channels_last)
        self.dictionary = GenericDictionary(self.model, opts.gamma_init).to(self.device)
        self.perceptual = self.shared_terms("dmdnet", DMDNET_FACE_WEIGHTS)
        self.weights = DMDNetLossWeights()
        self.opt_g = torch.optim.Adam(
            [*self.model.parameters(), *self.dictionary.gamma.parameters()], lr=opts.lr, betas=(0.5, 0.999)
        )
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=opts.disc_lr or opts.lr, betas=(0.5, 0.999))
        self.opt_dict: torch.optim.Optimizer | None = None

        # The Y generic images (fixed by the seed, drawn from the training split).
        y = opts.config.banks
        pick = np.random.default_rng(opts.seed + 1).choice(len(train_files), size=y, replace=False)
        self.generic_images = common.to_tensor([read_rgb(train_files[i]) for i in pick], self.device)
        self.generic_boxes = _boxes([self.train_data.landmarks[i] for i in pick])

    # -- state ------------------------------------------------------------------------------------

    def state(self) -> dict:
        return {
            "options": self.options_dict(),
            "model": self.model.state_dict(),
            **({"model_ema": self.ema.state_dict()} if self.ema is not None else {}),
            "disc": self.disc.state_dict(),
            "dictionary": self.dictionary.state(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "opt_dict": self.opt_dict.state_dict() if self.opt_dict else None,
        }

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.load_average(state)
        self.disc.load_state_dict(state["disc"])
        self.dictionary.load(state["dictionary"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        if state["opt_dict"] is not None:
            self._dict_optimizer().load_state_dict(state["opt_dict"])

    def _dict_optimizer(self) -> torch.optim.Optimizer:
        if self.opt_dict is None:
            params = self.dictionary.make_parameters()
            self.opt_dict = torch.optim.Adam(
                params.parameters(), lr=self.opts.lr * self.opts.dict_lr_ratio, betas=(0.5, 0.999)
            )
        return self.opt_dict

    # -- one step -------------------------------------------------------------------------------------

    def make_batch(self, rng: np.random.Generator) -> dict:
        """One training batch (runs in the prefetch thread with its own generator)."""
        opts = self.opts
        n_refs = int(rng.choice(opts.refs_choices, p=opts.refs_probs))
        samples = [self.train_data.sample(rng, n_refs) for _ in range(opts.batch)]
        batch = {
            "hq": common.to_tensor([s.hq for s in samples]),
            "lq": common.to_tensor([s.lq for s in samples]),
            "boxes": _boxes([s.landmarks for s in samples]),
            "n_refs": n_refs,
        }
        if n_refs:
            batch["refs"] = common.to_tensor([r for s in samples for r in s.refs])
            batch["ref_boxes"] = _boxes([m for s in samples for m in s.ref_landmarks])
        return batch

    def _generic(self, stage: str, batch: dict) -> tuple[dict[str, Tensor] | None, callable]:
        """The generic dictionary this step reads, and what to do after the optimiser step."""
        d = self.dictionary
        if stage == "init":
            idx = torch.from_numpy(self.rng.choice(self.opts.config.banks, self.opts.refresh_items, replace=False))
            fresh = self.model.encode_references(self.generic_images[idx], self.generic_boxes[idx])
            gen = {}
            for k in NAMES:
                t = d.cache[k].clone()
                t[idx] = fresh[k].float()
                gen[k] = t

            def after() -> None:
                for k in NAMES:
                    d.cache[k][idx] = fresh[k].detach().float()

            return gen, after
        if stage == "forward":
            b = batch["hq"].shape[0]
            gt = self.model.encode_references(batch["hq"], batch["boxes"])
            gen = {}
            updates = {}
            for k in NAMES:
                base = d.cache[k]
                key_name = k[:-5] + "Key" if k.endswith("Value") else k
                # Which item each ground truth updates: the one whose key it matches best.
                sims = gt[key_name].detach().float().flatten(1) @ d.cache[key_name].flatten(1).t()
                items = sims.argmax(1)
                gamma = torch.sigmoid(d.gamma[k])
                per_face = base.unsqueeze(0).repeat(b, *([1] * base.ndim))
                new_items = gamma * base[items] + (1 - gamma) * gt[k].float()
                rows = []
                for i in range(b):
                    t = per_face[i]
                    for j in range(b):
                        if j != i:  # never read an item updated with one's own ground truth
                            t = t.index_put((items[j : j + 1],), new_items[j : j + 1])
                    rows.append(t)
                gen[k] = torch.stack(rows)
                updates[k] = (items, new_items)

            def after() -> None:
                for k, (items, new_items) in updates.items():
                    d.cache[k][items] = new_items.detach()

            return gen, after
        if stage == "backward":
            self._dict_optimizer()
            return dict(d.params.items()), lambda: None
        return None, lambda: None

    def train_step(self, batch: dict) -> dict:
        opts = self.opts
        stage = opts.stage(self.step)
        if stage == "buffer" and self.dictionary is not None and not getattr(self, "_frozen", False):
            self.dictionary.write_into(self.model)
            self._frozen = True
        self.model.train()
        with common.autocast(self.amp, self.device):
            generic, after = self._generic(stage, batch)
            specific = None
            if batch["n_refs"]:
                flat = self.model.encode_references(batch["refs"], batch["ref_boxes"])
                specific = _stack_specific(flat, opts.batch, batch["n_refs"])
            out = self.model(batch["lq"], batch["boxes"], specific, generic=generic)
        out = out.float()
        hq = batch["hq"]
        l_mse = mse_loss(out, hq)
        shared, raw = self.perceptual(out, hq)
        loss = self.weights.mse * l_mse + shared
        l_low = out.new_zeros(())
        if opts.low_freq > 0:
            l_low = low_frequency_loss(out, hq)
            loss = loss + opts.low_freq * l_low
        adv_scale = self.adv_weight()
        adv = adv_scale > 0 and self.step >= opts.adv_start
        l_g = out.new_zeros(())
        if adv:
            self.disc.requires_grad_(False)
            with common.autocast(self.amp, self.device):
                l_g = hinge_g_loss([x.float() for x in self.disc(out)], self.weights.adversarial)
            loss = loss + adv_scale * l_g
        self.opt_g.zero_grad(set_to_none=True)
        if self.opt_dict is not None:
            self.opt_dict.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        if self.ema is not None:
            self.ema.update(self.model)
        if stage == "backward":
            self.opt_dict.step()
        after()
        l_d = out.new_zeros(())
        if adv:
            self.disc.requires_grad_(True)
            with common.autocast(self.amp, self.device):
                real = self.disc(hq)
                fake = self.disc(out.detach())
            l_d = hinge_d_loss([x.float() for x in real], [x.float() for x in fake])
            self.opt_d.zero_grad(set_to_none=True)
            l_d.backward()
            self.opt_d.step()
        self.step += 1
        losses = {"loss": loss, "mse": l_mse, **raw, "low": l_low, "g_adv": l_g, "d": l_d}
        return {
            "step": self.step,
            "stage": stage,
            "refs": batch["n_refs"],
            **{k: float(v.detach()) for k, v in losses.items()},
            "adv_scale": adv_scale if adv else 0.0,
            "psnr": float(common.psnr(out.detach(), hq).mean()),
        }

    # -- validation and export ------------------------------------------------------------------------

    def validate(self, limit: int | None = 8) -> dict:
        """PSNR/SSIM on held-out faces at fixed x4 and x8 degradations, generic and with 2 views."""
        model = self.restorer
        if not getattr(self, "_frozen", False):
            self.dictionary.write_into(model)
        views: dict[int, dict] = {}

        def specific(i: int, hq_img: np.ndarray) -> dict:
            if i not in views:  # two reference views per face, the same for x4 and x8
                rng = np.random.default_rng(1234 + i)
                refs = [reference_view(hq_img, rng, self.predictor) for _ in range(2)]
                ref_t = common.to_tensor([r for r, _ in refs], self.device)
                views[i] = model.encode_references(ref_t, _boxes([m for _, m in refs]))
            return views[i]

        def boxes(i: int) -> Tensor:
            return _boxes([self.val_marks[i]])

        def real(t: Tensor, rgb: np.ndarray, path: Path) -> dict[str, Tensor]:
            if path not in self._real_marks:  # the crops do not change: their landmarks are found once
                self._real_marks[path] = self.predictor.predict(rgb)
            return {"generic": model(t, _boxes([self._real_marks[path]]))}

        with common.eval_mode(model):
            return common.validate_restorers(
                self.val_files,
                {
                    "generic": lambda lq, i, hq: model(lq, boxes(i)),
                    "refs": lambda lq, i, hq: model(lq, boxes(i), specific(i, hq)),
                },
                self.work / f"val_{self.step:06d}.jpg",
                limit,
                self.device,
                self.identity_measure(),
                [(path, functools.partial(real, path=path)) for path in self.val_real],
            )

    def export(self, validation: dict | None = None) -> str:
        model = self.restorer
        if not getattr(self, "_frozen", False):
            self.dictionary.write_into(model)
        return self.export_state(model.state_dict(), validation)


def train_dmdnet(opts: DMDNetTrainOptions) -> Path:
    """Train (or resume) and write the fp16 safetensors weights to ``opts.out``."""
    return DMDNetTrainer(opts).run()
