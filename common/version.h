// version.h: the shears version, one place.
#ifndef SH_VERSION_H
#define SH_VERSION_H

#define SH_VERSION "0.1.0"

#endif
