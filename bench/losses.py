"""Loss functions shared by methods."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def distillation_loss(student_logits: torch.Tensor, teacher_probs_t: torch.Tensor, y: torch.Tensor, *,
                      temperature: float, alpha: float) -> torch.Tensor:
    """Hinton et al. (2015) knowledge distillation, as in the Forget Me Not card section 3:
    alpha * T^2 * KL(teacher_T || softmax(z_s / T)) + (1 - alpha) * CE(z_s, y).

    `teacher_probs_t` are the teacher's probabilities already at temperature T (an ensemble of softmaxes at T).
    """
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    t = teacher_probs_t.float()
    kl = (t * (t.clamp_min(1e-12).log() - log_p_s)).sum(-1).mean()
    ce = F.cross_entropy(student_logits.float(), y)
    return alpha * temperature ** 2 * kl + (1.0 - alpha) * ce
