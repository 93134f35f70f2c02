"""UniPC multistep solving of diffusion-forcing blocks, with its coefficients computed once per step.

Diffusion forcing gives every causal block its own solver state (report section 3.4.2: each block has its
own noise level), so a long video at upstream defaults takes ~2,000 solver steps (diffusers' pipeline deep-
copies one UniPCMultistepScheduler per block). Each diffusers `step` recomputes, on 0-dim tensors, the same
scalars from the sigma schedule (log-SNRs, expm1, the B(h) and rho coefficients, a linear solve) before a
handful of element-wise tensor operations: at small sizes those scalars are most of the solver's time.

`UniPCCoefficients` computes the scalars of each (step, order) once per generation, with the same torch
operations in the same order, and `UniPCSolver.step` applies the very element-wise operations of
`UniPCMultistepScheduler.step` (UniPC, Zhao et al. 2023, arXiv 2302.04867: predictor UniP and corrector
UniC, B(h) = e^h - 1), so the results are bitwise those of the diffusers step. Only the configuration the
SkyReels-V2 checkpoints use is restated (x0 prediction from flow-matching velocity, no thresholding, no
alternative predictor); `make_solvers` falls back to copies of the diffusers scheduler for anything else.
"""

from __future__ import annotations

from copy import deepcopy

import torch


def supports(scheduler) -> bool:
    """Whether `scheduler` is a diffusers UniPC scheduler in the configuration restated here."""
    from diffusers import UniPCMultistepScheduler

    cfg = scheduler.config
    return (type(scheduler) is UniPCMultistepScheduler and scheduler.predict_x0 and scheduler.solver_p is None
            and cfg.prediction_type == "flow_prediction" and not cfg.thresholding
            and cfg.solver_type == "bh2")  # bh1 turns the last step (sigma 0) into NaN in diffusers


class UniPCCoefficients:
    """The scalars of `UniPCMultistepScheduler`'s predictor and corrector per (step index, order), computed
    lazily once, for a scheduler whose `set_timesteps` has run (it is only read)."""

    def __init__(self, scheduler, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.scheduler, self.device, self.dtype = scheduler, device, dtype
        self.sigmas = scheduler.sigmas
        self.num_timesteps = len(scheduler.timesteps)
        self._convert: dict[int, torch.Tensor] = {}
        self._predictor: dict[tuple[int, int], tuple] = {}
        self._corrector: dict[tuple[int, int], tuple] = {}

    def _lambda(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        alpha, sigma = self.scheduler._sigma_to_alpha_sigma_t(self.sigmas[index])
        return alpha, sigma, torch.log(alpha) - torch.log(sigma)

    def _common(self, t_index: int, s0_index: int, history: list[int], order: int, predictor: bool) -> tuple:
        """multistep_uni_{p,c}_bh_update's scalar part: (sigma_t / sigma_s0, alpha_t h phi_1, alpha_t B(h),
        rk of each earlier output, rhos)."""
        alpha_t, sigma_t, lambda_t = self._lambda(t_index)
        _, sigma_s0, lambda_s0 = self._lambda(s0_index)
        h = lambda_t - lambda_s0
        rks = [(self._lambda(si)[2] - lambda_s0) / h for si in history]
        rk_all = torch.stack(rks + [torch.ones(())])
        hh = -h  # predict_x0
        h_phi_1 = torch.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1
        factorial_i = 1
        b_h = torch.expm1(hh)  # bh2
        big_r, b = [], []
        for i in range(1, order + 1):
            big_r.append(torch.pow(rk_all, i - 1))
            b.append(h_phi_k * factorial_i / b_h)
            factorial_i *= i + 1
            h_phi_k = h_phi_k / hh - 1 / factorial_i
        big_r, b = torch.stack(big_r), torch.stack(b)
        if predictor:
            rhos = None
            if rks:
                rhos = torch.ones(1, dtype=self.dtype) * 0.5 if order == 2 else \
                    torch.linalg.solve(big_r[:-1, :-1], b[:-1]).to(self.dtype)
        else:
            rhos = torch.ones(1, dtype=self.dtype) * 0.5 if order == 1 else torch.linalg.solve(big_r, b).to(self.dtype)
        scalars = (sigma_t / sigma_s0, alpha_t * h_phi_1, alpha_t * b_h, *rks)
        return tuple(x.to(self.device) for x in scalars) + (None if rhos is None else rhos.to(self.device),)

    def convert(self, index: int) -> torch.Tensor:
        if index not in self._convert:
            self._convert[index] = self.sigmas[index].to(self.device)
        return self._convert[index]

    def predictor(self, index: int, order: int) -> tuple:
        key = (index, order)
        if key not in self._predictor:
            self._predictor[key] = self._common(index + 1, index, [index - i for i in range(1, order)], order, True)
        return self._predictor[key]

    def corrector(self, index: int, order: int) -> tuple:
        key = (index, order)
        if key not in self._corrector:
            self._corrector[key] = self._common(index, index - 1, [index - (i + 1) for i in range(1, order)], order,
                                                False)
        return self._corrector[key]


def _weighted(rhos: torch.Tensor, diffs: list[torch.Tensor]) -> torch.Tensor:
    # diffusers: einsum("k,bkc...->bc...", rhos, stack(diffs, 1)); one term is a plain product (same rounding)
    if len(diffs) == 1:
        return rhos[0] * diffs[0]
    return torch.einsum("k,bkc...->bc...", rhos, torch.stack(diffs, dim=1))


class UniPCSolver:
    """The state of one block's solver; `step` is `UniPCMultistepScheduler.step(..., return_dict=False)[0]`."""

    def __init__(self, coefficients: UniPCCoefficients):
        self.c = coefficients
        order = coefficients.scheduler.config.solver_order
        self.model_outputs: list[torch.Tensor | None] = [None] * order
        self.last_sample: torch.Tensor | None = None
        self.lower_order_nums, self.this_order, self.step_index = 0, 0, None

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor) -> torch.Tensor:
        c, cfg = self.c, self.c.scheduler.config
        if self.step_index is None:
            self.step_index = c.scheduler.index_for_timestep(timestep)
        index = self.step_index
        use_corrector = index > 0 and index - 1 not in cfg.disable_corrector and self.last_sample is not None
        converted = sample - c.convert(index) * model_output  # flow prediction -> x0
        if use_corrector:
            sample = self._correct(converted, sample)
        self.model_outputs = self.model_outputs[1:] + [converted]
        order = min(cfg.solver_order, c.num_timesteps - index) if cfg.lower_order_final else cfg.solver_order
        self.this_order = min(order, self.lower_order_nums + 1)
        self.last_sample = sample
        prev = self._predict(sample)
        self.lower_order_nums = min(self.lower_order_nums + 1, cfg.solver_order)
        self.step_index += 1
        return prev

    def _predict(self, x: torch.Tensor) -> torch.Tensor:
        ratio, phi, bh, *rest = self.c.predictor(self.step_index, self.this_order)
        rks, rhos = rest[:-1], rest[-1]
        m0 = self.model_outputs[-1]
        x_t = ratio * x - phi * m0
        if rks:
            diffs = [(self.model_outputs[-(i + 2)] - m0) / rk for i, rk in enumerate(rks)]
            x_t = x_t - bh * _weighted(rhos, diffs)
        return x_t.to(x.dtype)

    def _correct(self, model_t: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
        ratio, phi, bh, *rest = self.c.corrector(self.step_index, self.this_order)
        rks, rhos = rest[:-1], rest[-1]
        m0, x = self.model_outputs[-1], self.last_sample
        x_t_ = ratio * x - phi * m0
        d1_t = model_t - m0
        if rks:
            diffs = [(self.model_outputs[-(i + 2)] - m0) / rk for i, rk in enumerate(rks)]
            out = x_t_ - bh * (_weighted(rhos[:-1], diffs) + rhos[-1] * d1_t)
        else:
            out = x_t_ - bh * (0 + rhos[-1] * d1_t)
        return out.to(x.dtype)


class _DiffusersSolver:
    """A copy of any other diffusers multistep scheduler, stepped the usual way."""

    def __init__(self, scheduler, num_inference_steps: int, device):
        self.scheduler = deepcopy(scheduler)
        self.scheduler.set_timesteps(num_inference_steps, device=device)

    def step(self, model_output, timestep, sample):
        return self.scheduler.step(model_output, timestep, sample, return_dict=False)[0]


def make_solvers(scheduler, count: int, num_inference_steps: int, device, dtype=torch.float32,
                 coefficients: UniPCCoefficients | None = None) -> list:
    """`count` fresh solver states for `scheduler` (whose `set_timesteps(num_inference_steps)` has run);
    UniPC ones share `coefficients` (pass the same object across windows to compute them once)."""
    if coefficients is not None or supports(scheduler):
        coefficients = coefficients or UniPCCoefficients(scheduler, device, dtype)
        return [UniPCSolver(coefficients) for _ in range(count)]
    return [_DiffusersSolver(scheduler, num_inference_steps, device) for _ in range(count)]
