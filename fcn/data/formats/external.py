"""A Dataset class by import path ('package.module:Class', fcn/data/external.py): the format of every
data.<split>.name with a colon. It has no files of its own to list: the check reads its items."""

from omegaconf import OmegaConf

from fcn.config.formats import IMPORT_PATH_KEYS
from fcn.data.external import ExternalDataset
from fcn.data.formats.format import Format
from fcn.data.listing import Listing


def _open(ds, a, transforms):
    args = OmegaConf.to_container(ds.args, resolve=True) if OmegaConf.is_config(ds.args) else ds.args
    return ExternalDataset(
        ds.name, args, transforms, num_classes=a.num_classes, ignore_index=a.ignore_index, labels=a.labels
    )


FORMAT = Format(
    name="package.module:Class",
    about="your own Dataset class by import path, constructed with data.<split>.args",
    keys=IMPORT_PATH_KEYS,
    list=lambda ds, a: Listing(),
    open=_open,
    describe=lambda ds: f"{ds.name} with args {dict(ds.args)}",
    files=False,
)
