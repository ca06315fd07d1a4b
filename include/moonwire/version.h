/* The version of moonwire, set by the build from CMakeLists.txt. */
#ifndef MOONWIRE_VERSION_H
#define MOONWIRE_VERSION_H

#ifndef MW_VERSION
#define MW_VERSION "0.1.0"
#endif

#endif
