"""Built-in plugins that add the commands measuring a model and inspecting the plugins.

``core eval`` (:mod:`.evaluate`) and ``core plugins`` (:mod:`.listing`) are applications of the
hooks and of the registry, as ``core search`` and ``core laws`` are, so they reach the command line
the way a third party's command does (``register_commands``). Each plugin module imports only Typer
at its top and its command's module when the command line is built, so ``core --help`` stays fast.
"""
