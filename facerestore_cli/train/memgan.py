"""Training MemGAN as the paper describes it (section 3.4, 4.1), sized for a CPU.

Inputs are degraded with eq. 14 (blur 0.2–10, bilinear down 1–8, noise 0–15, JPEG 60–100, bilinear
back up) plus flips and colour jitter. The loss is eq. 13: α1·L1 + α2·perceptual + α3·adversarial
with StyleGAN2's logistic (softplus) loss and lazy R1, α = (0.1, 1, 0.1). The memory trains itself
online in the forward pass (eqs. 4–5), never by gradient.

Deviations, each forced by what this machine has:

* No pretrained StyleGAN2-512 can be downloaded here, so the decoder starts from scratch unless
  ``init`` names a file made by ``facerestore weights import-stylegan2`` (the paper's set-up).
* Without a pretrained VGG19 the perceptual term is the SSIM + gradient stand-in of
  :mod:`facerestore_cli.train.losses`; it has no colour term, so α1 is raised to 1 to keep colours
  and tones faithful (with VGG19 present the paper's 0.1 is used).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from facerestore_cli.models.memgan import Config, MemGAN
from facerestore_cli.train import common
from facerestore_cli.train.discriminators import StyleGAN2Discriminator
from facerestore_cli.train.losses import (
    MemGANLossWeights,
    feature_losses,
    l1_loss,
    lazy_r1_loss,
    logistic_d_loss,
    logistic_g_loss,
)


@dataclass
class MemGANTrainOptions(common.TrainOptions):
    config: Config = field(default_factory=Config.compact)
    init: Path | None = None
    steps: int = 10000
    disc_width: int = 8
    r1_interval: int = 16

    @property
    def total_steps(self) -> int:
        return self.steps


class MemGANTrainer(common.TrainerBase):
    method = "memgan"

    def __init__(self, opts: MemGANTrainOptions) -> None:
        self.setup(opts, "memgan")
        self.model = MemGAN(opts.config)
        if opts.init:
            from facerestore_cli.weights import load_weights

            self.model.load_state_dict({k: v.float() for k, v in load_weights(opts.init).tensors.items()})
        # (no channels_last for the model: its modulated conv weights are 5-D, as the clean layout is)
        self.disc = StyleGAN2Discriminator(width=opts.disc_width).to(memory_format=torch.channels_last)
        self.perceptual, _ = feature_losses("memgan", vgg=opts.vgg)
        paper = MemGANLossWeights()
        self.weights = paper if self.perceptual.pretrained else dataclasses.replace(paper, l1=1.0)
        self.opt_g = torch.optim.Adam(self.model.parameters(), lr=opts.lr, betas=(0.5, 0.99))
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=opts.lr, betas=(0.5, 0.99))

    def state(self) -> dict:
        return {
            "options": self.options_dict(),
            "model": self.model.state_dict(),
            "disc": self.disc.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
        }

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.disc.load_state_dict(state["disc"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])

    def make_batch(self, rng: np.random.Generator) -> dict:
        samples = [self.train_data.sample(rng) for _ in range(self.opts.batch)]
        return {"hq": common.to_tensor([s.hq for s in samples]), "lq": common.to_tensor([s.lq for s in samples])}

    def train_step(self, batch: dict) -> dict:
        opts = self.opts
        hq, lq = batch["hq"], batch["lq"]
        self.model.train()
        with common.autocast(opts.bf16):
            out = self.model(lq)
        out = out.float()
        l_l1 = l1_loss(out, hq)
        l_perc = self.perceptual(out, hq)
        loss = self.weights.l1 * l_l1 + self.weights.perceptual * l_perc
        adv = self.step >= opts.adv_start and self.weights.adversarial > 0
        l_g = out.new_zeros(())
        if adv:
            self.disc.requires_grad_(False)
            with common.autocast(opts.bf16):
                l_g = logistic_g_loss(self.disc(out).float())
            loss = loss + self.weights.adversarial * self.adv_factor * l_g
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        l_d = out.new_zeros(())
        if adv:
            self.disc.requires_grad_(True)
            with common.autocast(opts.bf16):
                l_d = logistic_d_loss(self.disc(hq).float(), self.disc(out.detach()).float())
            if self.step % opts.r1_interval == 0:
                real = hq.detach().requires_grad_(True)
                l_d = l_d + lazy_r1_loss(self.disc(real), real, interval=opts.r1_interval)
            self.opt_d.zero_grad(set_to_none=True)
            l_d.backward()
            self.opt_d.step()
        self.step += 1
        return {
            "step": self.step, "loss": float(loss.detach()), "l1": float(l_l1.detach()),
            "perc": float(l_perc.detach()), "g_adv": float(l_g.detach()), "d": float(l_d.detach()),
            "psnr": float(common.psnr(out.detach(), hq).mean()),
        }  # fmt: skip

    def validate(self, limit: int | None = 8) -> dict:
        with common.eval_mode(self.model):
            return common.validate_restorers(
                self.val_files,
                {"memgan": lambda lq, i, hq: self.model(lq)},
                self.work / f"val_{self.step:06d}.jpg",
                limit,
            )

    def export(self, validation: dict | None = None) -> str:
        return self.export_state(self.model.state_dict(), validation)


def train_memgan(opts: MemGANTrainOptions) -> Path:
    """Train (or resume) and write the fp16 safetensors weights to ``opts.out``."""
    return MemGANTrainer(opts).run()
