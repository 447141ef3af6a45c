"""What runs leave behind: checkpoints and their metadata, run folders and their status,
export for chgnet, predict and eval."""
