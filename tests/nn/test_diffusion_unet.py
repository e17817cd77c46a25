"""The diffusion U-Net: shapes at odd sizes, time conditioning, and inputs that reach the output."""
import pytest
import torch

from genzoo.nn.unet import UNet, sinusoidal_embedding


@pytest.mark.parametrize("size,mults,attn", [(8, (1, 2), (4,)), (7, (1, 2, 2), (4, 2)), (1, (1,), ())])
def test_unet_keeps_the_shape_and_every_input_reaches_the_output(size, mults, attn):
    torch.manual_seed(0)
    net = UNet(2, 3, size, base_channels=8, channel_mults=mults, num_res_blocks=1, attention_resolutions=attn).double()
    x = torch.randn(2, 2, size, size, dtype=torch.float64, requires_grad=True)
    out = net(x, torch.tensor([3.0, 500.0], dtype=torch.float64))
    assert out.shape == (2, 3, size, size)
    # the centre output of image 0 depends on both input channels (on 1x1 inputs a per-channel
    # group norm would erase the input), and never on image 1
    out[0, :, size // 2, size // 2].sum().backward()
    g = x.grad
    assert (g[0].flatten(1).abs().sum(1) > 0).all()
    assert (g[1] == 0).all()


def test_time_changes_the_output():
    torch.manual_seed(0)
    net = UNet(1, 1, 4, base_channels=8, attention_resolutions=(2,))
    x = torch.randn(1, 1, 4, 4).repeat(2, 1, 1, 1)
    out = net(x, torch.tensor([0.0, 900.0]))
    assert (out[0] - out[1]).abs().max() > 1e-4


def test_sinusoidal_embedding_is_cos_and_sin_of_geometric_frequencies():
    t = torch.tensor([0.0, 1.0, 250.0], dtype=torch.float64)
    e = sinusoidal_embedding(t, 8, dtype=torch.float64)
    w = 10000.0 ** (-torch.arange(4, dtype=torch.float64) / 4)
    torch.testing.assert_close(e, torch.cat([torch.cos(t[:, None] * w), torch.sin(t[:, None] * w)], 1))
