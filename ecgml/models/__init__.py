"""Model zoo: 1-D CNN and state-space (S4D) backbones for 12-lead ECGs behind one registry and one contract.

Importing this package registers the families below (nothing else happens at import):

    from ecgml.models import create_backbone, list_backbones, rebuild_backbone
    model = create_backbone("xresnet1d101", in_channels=12, num_classes=71)
    model.reset_classifier(18); model.unfreeze_last(1)        # transfer: new head, linear probe
    meta = model.constructor                                   # saved beside model.state_dict()
"""

from ecgml.models import inception1d, resnet1d, s4d, xresnet1d
from ecgml.models.base import Backbone, BackboneSpec, ClassifierHead, GlobalPool1d, count_parameters
from ecgml.models.inception1d import Inception1d
from ecgml.models.registry import (
    BackboneEntry,
    check_backbone_kwargs,
    create_backbone,
    family_of,
    family_rank,
    get_backbone_entry,
    list_backbones,
    list_families,
    rebuild_backbone,
    register_backbone,
)
from ecgml.models.resnet1d import ResNet1d
from ecgml.models.s4d import S4D
from ecgml.models.xresnet1d import XResNet1d

__all__ = [
    "S4D",
    "Backbone",
    "BackboneEntry",
    "BackboneSpec",
    "ClassifierHead",
    "GlobalPool1d",
    "Inception1d",
    "ResNet1d",
    "XResNet1d",
    "check_backbone_kwargs",
    "count_parameters",
    "create_backbone",
    "family_of",
    "family_rank",
    "get_backbone_entry",
    "inception1d",
    "list_backbones",
    "list_families",
    "rebuild_backbone",
    "register_backbone",
    "resnet1d",
    "s4d",
    "xresnet1d",
]
