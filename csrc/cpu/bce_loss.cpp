// BCE adversarial losses: filled in by the losses work.
#include "ganx.h"
