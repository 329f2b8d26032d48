"""CCRN: the shared ResNet cut into two parts (docs/model.md#ccrn-cut-points).

Sub-module 1 (`part1`) = stem .. cut stage; sub-module 2 (`part2`) = remaining stages +
global average pool + fc. Both are methods of one module, so they share one variables
tree (the plain ResNet tree: a torchvision checkpoint converts onto it unchanged) and
each can be applied on its own:

    h = ccrn.apply(v, x, train=False, method='part1')
    logits, pooled = ccrn.apply(v, h, train=False, method='part2')

The cross-modal interactions (CMSI, CMCI) act on `h` between the two calls. CCRN is
the `resnet` family of the backbone contract (docs/model.md#backbone-contract).
"""

from __future__ import annotations

import jax

from dcinet_jax.models.backbones.resnet import BLOCK_EXPANSION, ResNet, stage_names

Array = jax.Array

CUT_POINTS = stage_names(4)  # ('layer1', 'layer2', 'layer3', 'layer4')
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class CCRN(ResNet):
    """A `ResNet` with a cut point; `__call__` is still the uncut forward (logits)."""

    cut: str = 'layer4'

    input_mean = IMAGENET_MEAN  # the statistics torchvision's ImageNet weights expect
    input_std = IMAGENET_STD

    @property
    def cut_points(self) -> tuple[str, ...]:
        return stage_names(len(self.stage_sizes))

    @property
    def cut_channels(self) -> int:
        """Channels of the map at the cut (what CMCI splits into groups)."""
        return self.num_filters * 2 ** (self._cut_index() - 1) * BLOCK_EXPANSION[self.block]

    def _cut_index(self) -> int:
        names = stage_names(len(self.stage_sizes))
        if self.cut not in names:
            raise ValueError(f'CCRN.cut must be one of {names}, got {self.cut!r}')
        return names.index(self.cut) + 1

    def part1(self, x: Array, train: bool) -> Array:
        """Stem and stages up to and including `cut`: the map the interactions act on."""
        return self.run_stages(self.stem(x, train), train, 0, self._cut_index())

    def part2(self, h: Array, train: bool) -> tuple[Array, Array]:
        """Stages after `cut`, pool, fc: returns (logits f32[B,K], pooled f32[B,C])."""
        h = self.run_stages(h, train, self._cut_index(), len(self.stage_sizes))
        return self.head(h)
