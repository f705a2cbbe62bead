"""A small conv net with batch norm learns to segment a handful of generated images (NumPy)."""
import numpy as np

import tinyseg.functional as F
from tinyseg import Tensor, nn, no_grad, optim


def generated_images(count=4, size=16, num_classes=3, seed=0):
    """Images whose pixels carry their class in colour (plus noise): rectangles on background."""
    rng = np.random.default_rng(seed)
    colours = rng.uniform(-1, 1, (num_classes, 3))
    masks = np.zeros((count, size, size), np.int64)
    for mask in masks:
        for label in range(1, num_classes):
            top, left = rng.integers(0, size - 6, 2)
            height, width = rng.integers(4, 7, 2)
            mask[top:top + height, left:left + width] = label
    masks[:, 0, :] = 255  # a void border row, ignored by the loss
    images = colours[np.minimum(masks, num_classes - 1)].transpose(0, 3, 1, 2)  # (N, H, W, 3) -> (N, 3, H, W)
    images = images + 0.3 * rng.standard_normal(images.shape)
    return images.astype(np.float32), masks


class SmallNet(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=2, dilation=2, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.classifier = nn.Conv2d(8, num_classes, 1)

    def forward(self, x):
        return self.classifier(self.body(x))


def test_small_conv_net_with_batch_norm_overfits_generated_images():
    nn.init.manual_seed(0)
    images, masks = generated_images()
    net = SmallNet(num_classes=3)
    sgd = optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(150):
        loss = F.cross_entropy(net(Tensor(images)), masks, ignore_index=255)
        sgd.zero_grad()
        loss.backward()
        sgd.step()
        losses.append(float(loss.data))
    assert losses[-1] < losses[0] / 10, f"loss went from {losses[0]:.3f} to {losses[-1]:.3f}"
    net.eval()  # running statistics are good enough to predict too
    with no_grad():
        prediction = net(Tensor(images)).data.argmax(axis=1)
    valid = masks != 255
    assert (prediction[valid] == masks[valid]).mean() > 0.95
