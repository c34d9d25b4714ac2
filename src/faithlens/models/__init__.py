"""Models: adapters, sites, loading."""

from .adapters import Adapter, GenericAdapter, HFAdapter, Layout, hf_adapter
from .loading import cache_dir, load
from .model import Inputs, Model, wrap
from .sites import HookPoint, Site, SiteInfo, as_site

__all__ = [
    "Adapter",
    "GenericAdapter",
    "HFAdapter",
    "HookPoint",
    "Inputs",
    "Layout",
    "Model",
    "Site",
    "SiteInfo",
    "as_site",
    "cache_dir",
    "hf_adapter",
    "load",
    "wrap",
]
