"""The shared networks behind one two-part contract (`part1` up to the cut, `part2` after it):
ResNet, VGG and ViT, chosen by name through `registry`; docs/model.md#other-backbones."""
