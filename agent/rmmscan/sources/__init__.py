"""Where candidate files come from: local paths, watch events, processes, forensic images."""
