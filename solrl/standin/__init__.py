"""Stand-in workers: the real driver, pools, dispatcher, ledger, store, selector, learner-group
wiring and weight publication, with the model-bearing workers replaced by processes that carry
FLUX.1 / SD3.5-L / SANA-size payloads and take modeled GPU durations (`cluster.stand_in`).

`models.py` holds the real models' dimensions, `timing.py` the seconds per model call, `payloads.py`
builds real-size tensors, `actors.py` the workers. None of them imports a model stack."""
