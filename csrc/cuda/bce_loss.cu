// BCE adversarial losses (CUDA): filled in by the losses work.
#include "ganx.h"
