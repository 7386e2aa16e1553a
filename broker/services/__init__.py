"""The domain core: views, CLI commands and tasks call these functions and nothing deeper."""
