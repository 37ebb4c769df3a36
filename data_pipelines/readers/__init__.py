"""One module per dataset layout; each registers its reader with `data_pipelines.registry.register`."""
