"""Where rows go. Each sink takes finished rows and never drops one silently."""
