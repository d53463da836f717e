"""LARS against a hand computation; lr scaling; parameter groups; warm-up + cosine schedule values."""

import itertools
import math

import pytest
import torch
from torch import nn

from histoclr.config.ssl import OptimConfig
from histoclr.optim import (
    LARS,
    build_optimizer,
    build_schedule,
    lr_factor,
    param_groups,
    scaled_lr,
    warmup_cosine,
)


def test_lars_two_steps_match_hand_computation():
    w = nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.float64))
    b = nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt = LARS([{"params": [w], "weight_decay": 0.1, "lars": True},
                {"params": [b], "weight_decay": 0.0, "lars": False}], lr=0.1, momentum=0.9, eta=0.15)
    g = torch.tensor([0.6, 0.8], dtype=torch.float64)
    # step 1: g' = g + 0.1 w = (0.9, 1.2), |g'| = 1.5, |w| = 5, trust = 0.15 * 5 / 1.5 = 0.5
    w.grad, b.grad = g.clone(), torch.tensor([2.0], dtype=torch.float64)
    opt.step()
    v = [0.1 * 0.5 * 0.9, 0.1 * 0.5 * 1.2]
    assert w.tolist() == pytest.approx([3 - v[0], 4 - v[1]], abs=1e-12)
    assert b.tolist() == pytest.approx([1 - 0.1 * 2.0], abs=1e-12)       # no trust ratio, no decay
    # step 2: the momentum buffer carries over
    w1 = [3 - v[0], 4 - v[1]]
    gp = [0.6 + 0.1 * w1[0], 0.8 + 0.1 * w1[1]]
    trust = 0.15 * math.hypot(*w1) / math.hypot(*gp)
    v = [0.9 * v[i] + 0.1 * trust * gp[i] for i in range(2)]
    w.grad = g.clone()
    opt.step()
    assert w.tolist() == pytest.approx([w1[0] - v[0], w1[1] - v[1]], abs=1e-12)


def test_lars_zero_weight_uses_trust_one():
    w = nn.Parameter(torch.zeros(3))
    opt = LARS([w], lr=1.0, momentum=0.0, eta=0.001)
    w.grad = torch.ones(3)
    opt.step()
    assert torch.equal(w.detach(), -torch.ones(3))


def test_param_groups_exclude_bn_and_bias():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(2, 3, 5, 5))
    groups = param_groups(model, 1e-6, exclude_1d=True)
    assert [p.shape for p in groups[0]["params"]] == [torch.Size([4, 3, 3, 3]), torch.Size([2, 36])]
    assert groups[1]["weight_decay"] == 0.0 and groups[1]["lars"] is False
    assert len(groups[1]["params"]) == 3                            # bn weight, bn bias, linear bias
    assert len(param_groups(model, 1e-6, exclude_1d=False)) == 1


@pytest.mark.parametrize("scaling,expected", [("linear", 0.3 * 512 / 256), ("sqrt", 0.3 * math.sqrt(512)),
                                              ("none", 0.3)])
def test_lr_scaling(scaling, expected):
    assert scaled_lr(OptimConfig(lr=0.3, lr_scaling=scaling), 512) == pytest.approx(expected)


@pytest.mark.parametrize("name,cls", [("lars", LARS), ("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)])
def test_build_optimizer(name, cls):
    opt = build_optimizer(nn.Linear(4, 2), OptimConfig(name=name, lr=0.1), global_batch=512)
    assert isinstance(opt, cls)
    assert [g["lr"] for g in opt.param_groups] == [pytest.approx(0.2)] * 2
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-6, 0.0]


def test_warmup_then_cosine_schedule():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = build_schedule(opt, OptimConfig(warmup_steps=4, min_lr_ratio=0.1), max_steps=20)
    lrs = []
    for _ in range(20):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[:5] == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.0])              # (s+1)/4 then the peak
    assert lrs[12] == pytest.approx(2.0 * (0.1 + 0.9 * 0.5))                # halfway through the cosine
    assert all(a > b for a, b in itertools.pairwise(lrs[4:]))                     # decays monotonically
    assert lr_factor(20, 4, 20, 0.1) == pytest.approx(0.1)                  # floor at the end


def test_warmup_fraction_wins():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_schedule(opt, OptimConfig(warmup_steps=100, warmup_fraction=0.1), max_steps=50)
    assert sched.get_last_lr()[0] == pytest.approx(1 / 5)


def test_param_groups_with_parts_and_lr_multipliers():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    groups = param_groups(model, 1e-4, lr=1e-3, mult={"enc": 0.1},
                          part_of=lambda name: "enc" if name.startswith("0.") else "dec")
    by_name = {g["name"]: g for g in groups}
    assert [g["name"] for g in groups] == ["dec", "dec_no_decay", "enc", "enc_no_decay"]
    assert by_name["enc"]["lr"] == pytest.approx(1e-4) and by_name["dec"]["lr"] == pytest.approx(1e-3)
    assert by_name["enc_no_decay"]["weight_decay"] == 0.0 and by_name["enc"]["weight_decay"] == 1e-4
    assert by_name["enc"]["params"][0] is model[0].weight


def test_warmup_cosine_is_lr_factor_on_every_group():
    w1, w2 = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [w1], "lr": 1.0}, {"params": [w2], "lr": 0.1}], lr=1.0)
    sched = warmup_cosine(opt, warmup=2, max_steps=10, min_lr_ratio=0.1)
    seen = []
    for step in range(10):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    for step, (a, b) in enumerate(seen):
        assert a == pytest.approx(lr_factor(step, 2, 10, 0.1)) and b == pytest.approx(0.1 * a)
    assert seen[0][0] == pytest.approx(0.5) and seen[1][0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="max_steps"):
        warmup_cosine(opt, warmup=2, max_steps=0)
