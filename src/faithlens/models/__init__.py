"""Models: adapters, sites, the wrapped Model (loading by name is :mod:`faithlens.loading`)."""

from .adapters import Adapter, GenericAdapter, HFAdapter, Layout, hf_adapter
from .model import Inputs, Model, wrap
from .sites import HookPoint, Site, SiteInfo, as_site
from .vision import ConvAdapter  # registers the vision adapters with hf_adapter

__all__ = [
    "Adapter",
    "ConvAdapter",
    "GenericAdapter",
    "HFAdapter",
    "HookPoint",
    "Inputs",
    "Layout",
    "Model",
    "Site",
    "SiteInfo",
    "as_site",
    "hf_adapter",
    "wrap",
]
