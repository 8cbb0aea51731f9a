"""synth.loader: the native loader over `synth pack --format native` output.

from synth.loader import PackedDataset, PackedLoader
ds = PackedDataset("packed/", batch_size=8, rank=rank, world_size=world, seed=0)
loader = PackedLoader(ds, num_workers=2)
for batch in loader:   # input_ids, labels, position_ids, cu_seqlens, max_seqlen, ...
    ...
ckpt["data"] = loader.state_dict()   # later: loader.load_state_dict(ckpt["data"])
"""

from synth.loader.data import PackedData, build_batch
from synth.loader.dataset import PackedBatches, PackedDataset, PackedLoader

__all__ = ["PackedBatches", "PackedData", "PackedDataset", "PackedLoader", "build_batch"]
