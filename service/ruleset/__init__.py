"""The rule set: its model, fact schema, loader, safety and static checks, scenarios, reload."""
