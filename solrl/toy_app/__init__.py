"""The shapes world as an application: its run world (solrl.world's ShapesWorld), its eval and
sample grids, pretraining the shapes model, and the `solrl toy` commands. The shapes library
itself (captions, renderer, detector, shipped prompts and weights) is solrl.toy, below the rewards
that read it."""
