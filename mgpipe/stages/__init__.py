"""The pipeline's stages, one module per workflow rule (`mgpipe <stage>`)."""
