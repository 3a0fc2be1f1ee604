// The one door to libsodium. Only VaultCrypto imports this module.
#include <sodium.h>
