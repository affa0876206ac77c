"""The host as the deploy sees it: its platform (the only place outside tasks.supervise that
knows macOS from Linux), the layout (derived names), and the facts about the whole host.
"""
