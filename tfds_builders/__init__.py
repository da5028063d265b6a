"""One TFDS builder per dataset layout, one package each."""

import importlib

# Every builder package; importing one registers its builder with TFDS.
_BUILDERS = {
    'afew': 'tfds_builders.afew',
    'afew_va': 'tfds_builders.afew_va',
    'aff_wild': 'tfds_builders.aff_wild',
    'aff_wild2': 'tfds_builders.aff_wild2',
    'affectnet': 'tfds_builders.affectnet',
    'frame_list': 'tfds_builders.frame_list',
    'realeyes': 'tfds_builders.realeyes',
    'recola': 'tfds_builders.recola',
    'synthetic_faces': 'tfds_builders.synthetic_faces',
}


def register_all() -> list[str]:
  """Imports every builder package; returns the registered builder names."""
  for module in _BUILDERS.values():
    importlib.import_module(module)
  return sorted(_BUILDERS)
