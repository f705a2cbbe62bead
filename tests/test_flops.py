"""tinyseg.flops: counted multiply-adds equal the hand formulas; the CLI prints the three groups."""
import numpy as np
import pytest

import tinyseg.functional as F
from tinyseg import nn
from tinyseg.flops import count, main, summarize
from tinyseg.models import build_model


@pytest.mark.parametrize("stride, padding, dilation, groups", [
    (1, 1, 1, 1), (2, 3, 1, 1), (1, 2, 2, 2), (2, 1, 1, 6)])  # last: depthwise (6 -> 6)
def test_one_conv_counts_the_hand_formula(stride, padding, dilation, groups):
    conv = nn.Conv2d(6, 6, 3, stride=stride, padding=padding, dilation=dilation, groups=groups)
    records = count(conv, size=(37, 50), batch=2, channels=6)
    out_h = (37 + 2 * padding - dilation * 2 - 1) // stride + 1
    out_w = (50 + 2 * padding - dilation * 2 - 1) // stride + 1
    assert [r.shape for r in records] == [(2, 6, out_h, out_w)]
    assert records[0].macs == 2 * out_h * out_w * 6 * (6 // groups) * 3 * 3
    assert records[0].kind == ("depthwise" if groups == 6 else "conv")


def test_counting_restores_the_model_and_the_ops():
    conv2d, batch_norm = F.conv2d, F.batch_norm
    model = build_model("tiny_resnet", "bilinear", num_classes=3).train()
    count(model, size=(32, 32))
    assert F.conv2d is conv2d and F.batch_norm is batch_norm
    assert all("forward" not in m.__dict__ for m in model.modules())
    assert model.training


def test_dupsampling_decoder_counts():
    """Without fusion the decoder is a 1x1 conv to C~ and DUpsample: exact totals."""
    model = build_model("tiny_resnet", "dupsampling", num_classes=3, output_stride=8, fuse=(),
                        dim=4, head_channels=16)
    rows = 8 * 8 * 3
    model.set_projection(np.ones((rows, 4), np.float32), np.zeros(rows, np.float32))
    records = count(model, size=(40, 56))   # a 5 x 7 feature map
    decoder = [r for r in records if r.group == "decoder"]
    assert [r.kind for r in decoder] == ["conv", "dupsample"]
    assert decoder[0].macs == 5 * 7 * 16 * 4
    assert decoder[1].macs == 5 * 7 * 4 * rows
    groups = summarize(model, records)
    assert list(groups) == ["backbone", "encoder", "decoder", "total"]
    assert groups["decoder"]["macs"] == 5 * 7 * (16 * 4 + 4 * rows)
    assert groups["decoder"]["buffers"] == rows * 5  # W and mean
    assert groups["total"]["params"] == model.num_parameters()
    bilinear = [r for r in records if r.kind == "bilinear"]  # ASPP's image pooling upsample
    assert [r.macs for r in bilinear] == [4 * 16 * 5 * 7]


def test_cli_prints_the_three_groups(capsys):
    assert main(["--model", "tiny_resnet", "--decoder", "deeplabv3plus", "--size", "64x96"]) == 0
    out = capsys.readouterr().out
    for group in ("backbone", "encoder", "decoder", "total"):
        assert f"\n{group} " in out
    assert "input 64x96" in out
    assert main(["--model", "tiny_resnet", "--fuse", "b9u9c9"]) == 2


def test_cli_reproduces_the_papers_na_row(capsys):
    """Table 2, "N/A": 0.80B FLOPs; ours is 2 x (256 C~ + C~ 16^2 21) x 33^2 = 0.785B."""
    assert main(["--model", "resnet50", "--fuse", "--size", "513", "--separable"]) == 0
    decoder = [line for line in capsys.readouterr().out.splitlines() if line.startswith("decoder")]
    macs = (256 * 64 + 64 * 16 * 16 * 21) * 33 * 33
    assert decoder[0].split()[1] == f"{macs / 1e9:.3f}G"
