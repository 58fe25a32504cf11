"""The Ray side of `python -m repro.train` (and of `tune`); the loop knows nothing of it (the worker hands
`repro.loop.train` a `Session`). Its modules:

    shipping   what a cluster's workers get from the driver: the code (`runtime_env`: py_modules, assets
               path, the worker set-up hook) and the weights files (`ship_weights` on the driver,
               `install_weights` on a worker, both checked by sha256)
    resume     the one checkpoint every worker resumes from (`agreed_resume`): rank 0 chooses, the others
               load that very one, or every worker stops with the same error
    launcher   `connect_ray` (start or join Ray, then the cluster checks: a run folder and image folders
               every node reaches), `launch_ray` (Ray Train's `TorchTrainer`) and `ray_worker`, the function
               each worker runs

Ray is imported inside the functions that use it (an optional dependency: `--launcher local` runs without it).
"""
