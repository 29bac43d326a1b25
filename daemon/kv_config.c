/*
 * kv_config.c — the configuration file via libinih (see kv_config.h).
 *
 * libinih reports the line of the first syntax error but not the line of
 * an entry its callback rejected, so lines are counted here, in the reader
 * that feeds ini_parse_stream(): the callback runs right after the reader
 * returned the entry's line, so `lines` is that line's number. A line too
 * long for libinih's buffer (INI_MAX_LINE) is refused here rather than
 * silently split in two.
 */
#include "kv_config.h"

#include <errno.h>
#include <ini.h>
#include <stdio.h>
#include <string.h>

struct ctx {
	FILE *f;
	kv_config_set_fn set;
	void *arg;
	int lines;     /* lines read so far */
	int too_long;  /* the line that did not fit, 0 = none */
	int fail_line; /* the line whose entry was rejected, 0 = none */
	char why[400]; /* why it was rejected */
};

static char *reader(char *str, int num, void *stream)
{
	struct ctx *c = stream;
	if (c->too_long || !fgets(str, num, c->f))
		return NULL;
	c->lines++;
	size_t len = strlen(str);
	if (len > 0 && str[len - 1] != '\n' && !feof(c->f)) {
		int ch = fgetc(c->f);
		if (ch != EOF) { /* more of this line follows */
			c->too_long = c->lines;
			return NULL; /* stops the parse */
		}
	}
	return str;
}

static int on_entry(void *user, const char *section, const char *name, const char *value)
{
	struct ctx *c = user;
	if (c->fail_line)
		return 0;
	if (section && section[0]) {
		snprintf(c->why, sizeof c->why, "sections are not used ([%s])", section);
		c->fail_line = c->lines;
		return 0;
	}
	if (c->set(c->arg, name, value, c->why, sizeof c->why) != 0) {
		c->fail_line = c->lines;
		return 0;
	}
	return 1;
}

int kv_config_load(const char *path, kv_config_set_fn set, void *arg, char *err, size_t errlen)
{
	struct ctx c = {.set = set, .arg = arg};
	c.f = fopen(path, "re");
	if (!c.f) {
		int rc = -errno;
		snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
		return rc;
	}
	int line = ini_parse_stream(reader, &c, on_entry, &c);
	int rerr = ferror(c.f);
	fclose(c.f);
	/* the earliest problem wins, as when reading the file top-down */
	if (line > 0 && (!c.fail_line || line < c.fail_line) &&
	    (!c.too_long || line < c.too_long)) {
		snprintf(err, errlen, "%s:%d: not a `key = value` line", path, line);
		return -EINVAL;
	}
	if (c.fail_line && (!c.too_long || c.fail_line < c.too_long)) {
		snprintf(err, errlen, "%s:%d: %s", path, c.fail_line, c.why);
		return -EINVAL;
	}
	if (c.too_long) {
		snprintf(err, errlen, "%s:%d: line too long (at most %d bytes)", path, c.too_long,
		         INI_MAX_LINE - 2);
		return -EINVAL;
	}
	if (rerr) {
		snprintf(err, errlen, "cannot read %s: I/O error", path);
		return -EIO;
	}
	if (line < 0) {
		snprintf(err, errlen, "%s: out of memory while parsing", path);
		return -ENOMEM;
	}
	return 0;
}
