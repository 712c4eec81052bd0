"""The ablation engine, laid out by path (see DESIGN.md, "The ablation engine"):

- :mod:`~singledir.engine.batches`: the one data adapter;
- :mod:`~singledir.engine.graph`: the fx trace, sites in it, unit axes;
- :mod:`~singledir.engine.runners`: chain / fx-cut / hooks runners (prefix once, suffix
  per stack of masks); :mod:`~singledir.engine.affine`: affine chains for rank-1 updates;
- :mod:`~singledir.engine.plan`: the :class:`~singledir.engine.plan.Plan` (which path, why);
- :mod:`~singledir.engine.stacked`: stacked masks;
- :mod:`~singledir.engine.walk`: the cumulative sum and the two-site walks;
- :mod:`~singledir.engine.kwalk`: the K-site walk (event by event);
- :mod:`~singledir.engine.levelwalk`: the level walk (a few levels, kept units only);
- :mod:`~singledir.engine.segments`: K sites with an affine tail at the last;
- :mod:`~singledir.engine.mlp_chain`: the MLP-chain description for the native walk
  (:mod:`~singledir.engine.native_walk`, in Rust);
- :mod:`~singledir.engine.importance`: single units (directions) ablated alone;
- :mod:`~singledir.engine.scoring`: accuracy / cross-entropy;
- :mod:`~singledir.engine.directions`: directions that are not units.

The package imports nothing on its own (``import singledir.engine`` is cheap); import the
modules you need.
"""
