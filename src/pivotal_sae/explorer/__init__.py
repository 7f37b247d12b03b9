"""The feature explorer: `pivotal-sae serve` (a FastAPI app) and `pivotal-sae highlight`.

- `config`   the two commands' options and their cheap checks
- `engine`   model + SAEs + one lock: tokenize, highlight, top latents
- `loading`  which model and SAEs to load (flags, --run, defaults), explanations
- `run_data` what the pages show of an `absorb` run directory
- `browse`   latents and pairs as the pages and the API present them
- `schemas`  the JSON API's bodies (its OpenAPI schema)
- `api`      /api routes; `pages` HTML routes; `security` token, size limits, headers
- `app`      the assembled app and `serve`; `client` the `highlight` command
"""
