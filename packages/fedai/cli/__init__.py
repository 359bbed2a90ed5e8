"""The `fedai` command: keys, services as processes, quotes and inference, and the local devnet.

The CLI starts services as child processes and never imports `fedai_router` or `fedai_node`.
"""
