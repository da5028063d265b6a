"""Small PyTorch references with torchvision's exact module names.

`resnet50()`, `vgg16()` and `alexnet()` build the same modules, in the same
order and under the same attribute names, as torchvision.models (v0.15+), so
`model.load_state_dict(torch.load('resnet50-0676ba61.pth'))` loads a real
torchvision file unchanged and their state dicts are what the importer
meets in the wild. `width` (and ResNet's `stage_sizes`, the classifier's
`fc_hidden`) shrink them for fast tests; the defaults are the real sizes.
Used by tests/test_models_torch.py and benchmarks/.
"""

from __future__ import annotations

import torch
from torch import nn


class Bottleneck(nn.Module):
  """torchvision.models.resnet.Bottleneck (v1.5: stride on the 3x3)."""
  expansion = 4

  def __init__(self, inplanes, planes, stride=1, downsample=None):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = downsample

  def forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    return self.relu(out + identity)


class ResNet(nn.Module):
  """torchvision.models.ResNet with Bottleneck blocks."""

  def __init__(self, stage_sizes=(3, 4, 6, 3), width=64, num_classes=1000):
    super().__init__()
    self.inplanes = width
    self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    self.relu = nn.ReLU(inplace=True)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    for i, n in enumerate(stage_sizes):
      setattr(self, f'layer{i + 1}',
              self._make_layer(width * 2**i, n, 1 if i == 0 else 2))
    self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
    self.fc = nn.Linear(self.inplanes, num_classes)
    self.num_stages = len(stage_sizes)

  def _make_layer(self, planes, blocks, stride):
    downsample = None
    if stride != 1 or self.inplanes != planes * 4:
      downsample = nn.Sequential(
          nn.Conv2d(self.inplanes, planes * 4, 1, stride, bias=False),
          nn.BatchNorm2d(planes * 4))
    layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
    self.inplanes = planes * 4
    layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)

  def features(self, x):
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    for i in range(self.num_stages):
      x = getattr(self, f'layer{i + 1}')(x)
    return torch.flatten(self.avgpool(x), 1)

  def forward(self, x):
    return self.fc(self.features(x))


def resnet50(**kwargs) -> ResNet:
  return ResNet(**kwargs)


def _vgg16_features(width):
  layers, in_ch = [], 3
  for mult, n_conv in ((1, 2), (2, 2), (4, 3), (8, 3), (8, 3)):
    for _ in range(n_conv):
      layers += [nn.Conv2d(in_ch, width * mult, 3, padding=1),
                 nn.ReLU(inplace=True)]
      in_ch = width * mult
    layers.append(nn.MaxPool2d(2, 2))
  return nn.Sequential(*layers), in_ch


class VGG(nn.Module):
  """torchvision.models.VGG with configuration 'D' (vgg16)."""

  def __init__(self, width=64, fc_hidden=4096, num_classes=1000):
    super().__init__()
    self.features, ch = _vgg16_features(width)
    self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
    self.classifier = nn.Sequential(
        nn.Linear(ch * 7 * 7, fc_hidden), nn.ReLU(True), nn.Dropout(),
        nn.Linear(fc_hidden, fc_hidden), nn.ReLU(True), nn.Dropout(),
        nn.Linear(fc_hidden, num_classes))

  def forward(self, x):
    x = torch.flatten(self.avgpool(self.features(x)), 1)
    return self.classifier(x)


def vgg16(**kwargs) -> VGG:
  return VGG(**kwargs)


class AlexNet(nn.Module):
  """torchvision.models.AlexNet."""

  def __init__(self, width=64, fc_hidden=4096, num_classes=1000):
    super().__init__()
    c = lambda n: n * width // 64
    self.features = nn.Sequential(
        nn.Conv2d(3, c(64), 11, 4, 2), nn.ReLU(True), nn.MaxPool2d(3, 2),
        nn.Conv2d(c(64), c(192), 5, padding=2), nn.ReLU(True),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(c(192), c(384), 3, padding=1), nn.ReLU(True),
        nn.Conv2d(c(384), c(256), 3, padding=1), nn.ReLU(True),
        nn.Conv2d(c(256), c(256), 3, padding=1), nn.ReLU(True),
        nn.MaxPool2d(3, 2))
    self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
    self.classifier = nn.Sequential(
        nn.Dropout(), nn.Linear(c(256) * 6 * 6, fc_hidden), nn.ReLU(True),
        nn.Dropout(), nn.Linear(fc_hidden, fc_hidden), nn.ReLU(True),
        nn.Linear(fc_hidden, num_classes))

  def forward(self, x):
    x = torch.flatten(self.avgpool(self.features(x)), 1)
    return self.classifier(x)


def alexnet(**kwargs) -> AlexNet:
  return AlexNet(**kwargs)


def randomise_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
  """Non-trivial BN affine parameters and running statistics, eval mode."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, nn.BatchNorm2d):
        n = m.num_features
        m.weight.copy_(0.5 + torch.rand(n, generator=g))
        m.bias.copy_(0.2 * torch.randn(n, generator=g))
        m.running_mean.copy_(0.2 * torch.randn(n, generator=g))
        m.running_var.copy_(0.5 + torch.rand(n, generator=g))
  return model.eval()


class ResNetLSTM(nn.Module):
  """The RealEyes model in torch: ResNet-50 features -> 2-layer LSTM -> FC."""

  def __init__(self, num_outputs=2, hidden=256, layers=2, **resnet_kwargs):
    super().__init__()
    self.trunk = ResNet(**resnet_kwargs)
    self.rnn = nn.LSTM(self.trunk.fc.in_features, hidden, layers,
                       batch_first=True)
    self.head = nn.Linear(hidden, num_outputs)

  def forward(self, frames):  # [B, T, 3, H, W]
    b, t = frames.shape[:2]
    feats = self.trunk.features(frames.flatten(0, 1)).view(b, t, -1)
    return self.head(self.rnn(feats)[0])


class AffWildNet(nn.Module):
  """kollias2019 Table 8 in torch: trunk -> [feats, 68 landmarks] -> FC ->
  2-layer GRU -> FC 2, as its users would write it with torchvision parts.

  `trunk='vgg_face'` flattens VGG-16's last max-pool (channel-major, as
  torch.flatten does), `'resnet50'` takes the pooled 2048 features.
  """

  def __init__(self, trunk='vgg_face', image_size=96, fc=4096, hidden=128,
               layers=2, dropout=0.5, num_outputs=2, width=64,
               stage_sizes=(3, 4, 6, 3)):
    super().__init__()
    if trunk == 'resnet50':
      self.trunk = ResNet(stage_sizes=stage_sizes, width=width)
      self.trunk.fc = nn.Identity()  # Features only.
      feats = self.trunk.inplanes
    else:
      self.trunk = nn.Module()
      self.trunk.features, ch = _vgg16_features(width)
      feats = ch * (image_size // 32)**2
    self.is_resnet = trunk == 'resnet50'
    self.fc = nn.Sequential(nn.Linear(feats + 136, fc), nn.ReLU(True),
                            nn.Dropout(dropout))
    self.rnn = nn.GRU(fc, hidden, layers, batch_first=True, dropout=dropout)
    self.head = nn.Linear(hidden, num_outputs)

  def forward(self, frames, landmarks):  # [B, T, 3, H, W], [B, T, 68, 2]
    b, t = frames.shape[:2]
    x = frames.flatten(0, 1)
    x = self.trunk.features(x) if not self.is_resnet else self.trunk(x)
    x = torch.cat([x.reshape(b, t, -1), landmarks.flatten(2)], -1)
    return self.head(self.rnn(self.fc(x))[0])
