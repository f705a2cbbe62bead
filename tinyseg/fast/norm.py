"""Batch normalisation slab by slab: the fast twin of tinyseg/functional/norm.py's BatchNorm.

The reference makes several whole-array passes (mean, variance, x_hat, y, the ReLU) and each
streams the activation through main memory. Channels are independent, so here forward and
backward each run all their passes on one cache-sized slab of channels at a time, the slabs
spread over the cores (tinyseg/fast/parallel.py), writing into preallocated arrays with out=.
The ReLU that follows almost every batch norm (relu=True) is then one more pass over a slab
still in the cache. Same statistics, same formulas, same results up to float rounding.
"""
from ..backend import get_array_module
from ..functional.norm import BatchNorm, channel_sum, per_channel
from .parallel import for_each_channel_slab


class SlabBatchNorm(BatchNorm):
    """BatchNorm (same arguments and results), every pass on one slab of channels."""

    def forward(self, x, gamma, beta):
        xp = get_array_module(x)
        channels = x.shape[1]
        self.count = x.size // channels  # M = N * H * W values per channel
        mean = xp.empty(channels, x.dtype)
        squares = xp.empty(channels, x.dtype)  # sum of (x - mean)^2 per channel
        self.inv_std = xp.empty(channels, x.dtype)
        y = xp.empty_like(x)  # (N, C, H, W)
        # x_hat (and the ReLU's mask y > 0) are kept only for backward; without one,
        # training mode builds x_hat in y
        backward = any(self.needs_input_grad)
        self.x_hat = xp.empty_like(x) if backward else None
        self.mask = xp.empty(x.shape, bool) if backward and self.relu else None

        def normalise(c):  # channels c of every array
            x_hat = y[:, c] if self.x_hat is None else self.x_hat[:, c]
            if self.training:
                mean[c] = channel_sum(x[:, c]) / self.count
                centered = xp.subtract(x[:, c], per_channel(mean[c]), out=x_hat)
                squares[c] = channel_sum(centered * centered)
                self.inv_std[c] = 1 / xp.sqrt(squares[c] / self.count + self.eps)
                centered *= per_channel(self.inv_std[c])  # in place: x_hat
                xp.multiply(x_hat, per_channel(gamma[c]), out=y[:, c])
                y[:, c] += per_channel(beta[c])
            else:  # y = x * scale + shift, with scale = gamma / std, shift = beta - mean * scale
                running_mean = self.running_mean[c].astype(x.dtype, copy=False)
                self.inv_std[c] = 1 / xp.sqrt(self.running_var[c].astype(x.dtype) + self.eps)
                scale = gamma[c] * self.inv_std[c]
                xp.multiply(x[:, c], per_channel(scale), out=y[:, c])
                y[:, c] += per_channel(beta[c] - running_mean * scale)
                if self.x_hat is not None:
                    xp.subtract(x[:, c], per_channel(running_mean), out=x_hat)
                    x_hat *= per_channel(self.inv_std[c])
            if self.mask is not None:
                xp.greater(y[:, c], 0, out=self.mask[:, c])
            if self.relu:
                xp.maximum(y[:, c], 0, out=y[:, c])
        for_each_channel_slab(normalise, x)
        if self.training and self.running_mean is not None:
            self.update_running_stats(mean, squares / (self.count - 1))
        self.gamma = gamma
        return y

    def backward(self, gy):
        """The reference formulas, slab by slab (see functional/norm.py)."""
        xp = get_array_module(gy)
        gbeta, ggamma = xp.empty_like(self.gamma), xp.empty_like(self.gamma)  # (C,) each
        gx = xp.empty_like(gy)  # (N, C, H, W)

        def differentiate(c):  # channels c of every array
            g, x_hat, out = gy[:, c], self.x_hat[:, c], gx[:, c]
            if self.relu:
                g = g * self.mask[:, c]  # through the ReLU first
            gbeta[c] = channel_sum(g)
            xp.multiply(g, x_hat, out=out)  # out as scratch for g * x_hat
            ggamma[c] = channel_sum(out)
            scale = per_channel(self.gamma[c] * self.inv_std[c])  # (1, slab, 1, 1)
            if not self.training:
                xp.multiply(g, scale, out=out)
                return
            # the training formula, in place on out (each step one pass over the slab):
            xp.multiply(x_hat, per_channel(-ggamma[c] / self.count), out=out)  # - x_hat dgamma / M
            out += g
            out -= per_channel(gbeta[c] / self.count)  # - dbeta / M
            out *= scale
        for_each_channel_slab(differentiate, gy)
        return gx, ggamma, gbeta
