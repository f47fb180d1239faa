"""Training MemGAN as the paper describes it (section 3.4, 4.1), sized for a CPU.

Inputs are degraded with eq. 14 (blur 0.2–10, bilinear down 1–8, noise 0–15, JPEG 60–100, bilinear
back up) plus flips and colour jitter. The loss is eq. 13: α1·L1 + α2·perceptual + α3·adversarial
with StyleGAN2's logistic (softplus) loss and lazy R1, α = (0.1, 1, 0.1). The memory trains itself
online in the forward pass (eqs. 4–5), never by gradient.

Deviations, each forced by what this machine has:

* No pretrained StyleGAN2-512 can be downloaded here, so the decoder starts from scratch unless
  ``init`` names a file made by ``facerestore weights import-stylegan2`` (the paper's set-up).
* Without a pretrained VGG19 the perceptual term is dlib's face net
  (:class:`~facerestore_cli.train.objectives.FaceLosses`), which normalises every feature vector and
  so barely sees colour or tone: α1 is raised to 1 to keep them faithful (with VGG19 present the
  paper's 0.1 is used). Identity and chroma terms are added either way (:data:`MEMGAN_FACE_WEIGHTS`).
* The adversarial weight is ``adv_scale`` times the paper's *ratio* to the pixel term (α3/α1 = 1),
  so with α1 = 1 the paper's balance is α3 = 1; the first shipped weights were trained at α3 = 0.1,
  where the ramp starts by default (:class:`~facerestore_cli.train.objectives.AdversarialRamp`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from facerestore_cli.models.memgan import Config, MemGAN
from facerestore_cli.models.stylegan2 import StyleConv
from facerestore_cli.train import common
from facerestore_cli.train.discriminators import StyleGAN2Discriminator
from facerestore_cli.train.losses import (
    MemGANLossWeights,
    l1_loss,
    lazy_r1_loss,
    logistic_d_loss,
    logistic_g_loss,
    low_frequency_loss,
)
from facerestore_cli.train.objectives import FaceLossWeights

#: Face-net and chroma weights for MemGAN without VGG19. MemGAN's pixel term is L1 at α1 = 1, whose
#: gradient on the output of the first shipped weights has a norm of 0.00056 (spread evenly over
#: every pixel) against the SSIM + Sobel stand-in's 0.0044 it was trained with; the face terms per
#: unit weight send 0.0073 (chip), 0.018 (full-resolution centre) and 0.0091 (identity). At half,
#: a quarter and half of that the three together pull about three times as hard as the stand-in
#: did, towards texture and identity, while L1 and chroma keep colour. Chroma at 4 makes a speck's
#: pixel pull about five times harder than L1 alone would (L1 weighs a green speck like a grey one).
MEMGAN_FACE_WEIGHTS = FaceLossWeights(perceptual=0.5, detail=0.25, identity=0.5, chroma=4.0)


@dataclass
class MemGANTrainOptions(common.TrainOptions):
    config: Config = field(default_factory=Config.compact)
    steps: int = 10000
    disc_width: int = 8
    r1_interval: int = 16
    #: the decoder's noise injection (StyleGAN2's per-conv noise); False zeroes and freezes its
    #: strengths, in the model and its moving average, from the start and on every resume
    noise: bool = True

    @property
    def total_steps(self) -> int:
        return self.steps


class MemGANTrainer(common.TrainerBase):
    """MemGAN on the shared loop: the StyleGAN2 logistic loss with lazy R1, the memory banks updated
    by their EMA inside the forward pass (eq. 5)."""

    method = "memgan"
    main_restorer = "memgan"
    default_adv_from = 0.1

    def __init__(self, opts: MemGANTrainOptions) -> None:
        self.setup(opts, "memgan")
        self.model = MemGAN(opts.config)
        if opts.init:
            self.load_init(self.model)
        # (no channels_last for the model: its modulated conv weights are 5-D, as the clean layout is)
        self.model = self.model.to(self.device)
        self.average_weights()
        disc = StyleGAN2Discriminator(width=opts.disc_width)
        self.disc = disc.to(self.device, memory_format=torch.channels_last)
        self.perceptual = self.shared_terms("memgan", MEMGAN_FACE_WEIGHTS)
        paper = MemGANLossWeights()
        self.weights = paper if self.perceptual.pretrained else dataclasses.replace(paper, l1=1.0)
        self.opt_g = torch.optim.Adam(self.model.parameters(), lr=opts.lr, betas=(0.5, 0.99))
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=opts.disc_lr or opts.lr, betas=(0.5, 0.99))
        self.silence_noise()

    def silence_noise(self) -> None:
        """With ``noise=False``, zero and freeze the decoder's noise strengths.

        Why: the first sharper run's crosshatch was its 256 px layer's noise. With the step-3500
        weights' noise strengths set to 0, the real-crop grid energy fell from 1.23 to 0.23 and the
        eyes stayed sharp (docs/studies/crosshatch.md). Fine detail must then come from the input.
        """
        if self.opts.noise:
            return
        for model in (self.model, *((self.ema.model,) if self.ema is not None else ())):
            for module in model.modules():
                if isinstance(module, StyleConv):
                    with torch.no_grad():
                        module.weight.zero_()
                    module.weight.requires_grad_(False)

    def state(self) -> dict:
        return {
            "options": self.options_dict(),
            "model": self.model.state_dict(),
            **({"model_ema": self.ema.state_dict()} if self.ema is not None else {}),
            "disc": self.disc.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
        }

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.load_average(state)
        self.disc.load_state_dict(state["disc"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.silence_noise()

    def make_batch(self, rng: np.random.Generator) -> dict:
        samples = [self.train_data.sample(rng) for _ in range(self.opts.batch)]
        return {"hq": common.to_tensor([s.hq for s in samples]), "lq": common.to_tensor([s.lq for s in samples])}

    def train_step(self, batch: dict) -> dict:
        opts = self.opts
        hq, lq = batch["hq"], batch["lq"]
        self.model.train()
        with common.autocast(self.amp, self.device):
            out = self.model(lq)
        out = out.float()
        l_l1 = l1_loss(out, hq)
        shared, raw = self.perceptual(out, hq)
        loss = self.weights.l1 * l_l1 + shared
        l_low = out.new_zeros(())
        if opts.low_freq > 0:
            l_low = low_frequency_loss(out, hq)
            loss = loss + opts.low_freq * l_low
        # adv_scale multiplies the paper's α3/α1 ratio, so α3 follows the pixel weight in use
        adv_scale = self.adv_weight()
        alpha3 = adv_scale * self.weights.adversarial / MemGANLossWeights().l1 * self.weights.l1
        adv = self.step >= opts.adv_start and alpha3 > 0
        l_g = out.new_zeros(())
        if adv:
            self.disc.requires_grad_(False)
            with common.autocast(self.amp, self.device):
                l_g = logistic_g_loss(self.disc(out).float())
            loss = loss + alpha3 * l_g
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        if self.ema is not None:
            self.ema.update(self.model)
        l_d = out.new_zeros(())
        if adv:
            self.disc.requires_grad_(True)
            with common.autocast(self.amp, self.device):
                l_d = logistic_d_loss(self.disc(hq).float(), self.disc(out.detach()).float())
            if self.step % opts.r1_interval == 0:
                real = hq.detach().requires_grad_(True)
                l_d = l_d + lazy_r1_loss(self.disc(real), real, interval=opts.r1_interval)
            self.opt_d.zero_grad(set_to_none=True)
            l_d.backward()
            self.opt_d.step()
        self.step += 1
        losses = {"loss": loss, "l1": l_l1, **raw, "low": l_low, "g_adv": l_g, "d": l_d}
        return {
            "step": self.step, **{k: float(v.detach()) for k, v in losses.items()},
            "adv_scale": adv_scale if adv else 0.0, "alpha3": alpha3 if adv else 0.0,
            "psnr": float(common.psnr(out.detach(), hq).mean()),
        }  # fmt: skip

    def validate(self, limit: int | None = 8) -> dict:
        with common.eval_mode(self.restorer):
            return common.validate_restorers(
                self.val_files,
                {"memgan": lambda lq, i, hq: self.restorer(lq)},
                self.work / f"val_{self.step:06d}.jpg",
                limit,
                self.device,
                self.identity_measure(),
                [(path, lambda t, rgb: {"memgan": self.restorer(t)}) for path in self.val_real],
            )

    def export(self, validation: dict | None = None) -> str:
        return self.export_state(self.restorer.state_dict(), validation)


def train_memgan(opts: MemGANTrainOptions) -> Path:
    """Train (or resume) and write the fp16 safetensors weights to ``opts.out``."""
    return MemGANTrainer(opts).run()
