# Sourced at the start of a device call: installs the carried wheels (.whl/, from scripts/device/wheels.sh) into
# /tmp/site, and puts it, then the checkout, on PYTHONPATH, before the image's own packages. A call that carries no
# .whl/ uses what an earlier call installed on the same warm machine: where the checkout and the wheels together pass
# the 64 MiB a call carries, one call installs them and the next, within the machine's idle time, runs.
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || return 1
elif [ ! -d /tmp/site ]; then
  echo "device env: no wheels carried (.whl/) and none installed in /tmp/site; run scripts/device/wheels.sh here and carry .whl" >&2
  return 1
fi
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
python3 -c "import torch, transformers, trl, uniapl.rewards.ifeval  # the IFEval reward: lm_eval's checker, offline
print('device env: torch', torch.__version__, '| transformers', transformers.__version__, '| trl', trl.__version__,
      '| cuda', torch.cuda.is_available())" || return 1
