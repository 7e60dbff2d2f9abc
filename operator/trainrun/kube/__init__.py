"""The Kubernetes adapter: the only package that talks to the API server.

``api`` is the synchronous client of the CLI and ``trainrun.Client`` (the official ``kubernetes``
package); ``aioclient`` the asynchronous one of the operator (aiohttp, on kopf's event loop);
``streams`` the pure bookkeeping both log readers share. Import the module you need: nothing is
imported here, so the operator's process never loads the ``kubernetes`` package.
"""
