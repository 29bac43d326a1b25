/*
 * kv_config.h — kvd's configuration file (/etc/kvd/kvd.conf by default):
 * `key = value` lines, `#` or `;` comments on their own lines (and `;`
 * after a value when preceded by a blank), no sections, no line longer
 * than 198 bytes. Parsing is done by libinih (a small, well-kept INI
 * parser packaged by Debian) rather than by hand; this module adds
 * line-accurate errors. Owns nothing after a call returns.
 *
 * Every key is the name of a kvd flag without its leading dashes; kvd
 * applies the file first and its command-line flags afterwards, so flags
 * win. An unknown key or a bad value stops the start with
 * "PATH:LINE: message".
 */
#ifndef KV_CONFIG_H
#define KV_CONFIG_H

#include <stddef.h>

/* Applies one setting; returns 0, or < 0 with a reason in err. key and
 * value are borrowed for the call. */
typedef int (*kv_config_set_fn)(void *arg, const char *key, const char *value, char *err,
                                size_t errlen);

/* Parse path, calling set for every key in file order (the first failure
 * stops the calls). Returns 0; -errno when the file cannot be opened
 * (-ENOENT: it does not exist; err says "cannot read PATH: ..."); or < 0
 * with "PATH:LINE: reason" in err, reason being set's message, "not a
 * `key = value` line" or "line too long". */
int kv_config_load(const char *path, kv_config_set_fn set, void *arg, char *err, size_t errlen);

#endif
