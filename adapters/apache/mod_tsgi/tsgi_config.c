/*
 * mod_tsgi configuration: the directives (TsgiDaemon and the per-directory
 * TsgiDaemonName, TsgiAuthenticate, TsgiAuthorize, TsgiLog; TsgiSchedBatch),
 * their parsing and checks, and the per-directory config. The daemons of one
 * configuration generation live in a registry kept as pconf userdata.
 */
#include "mod_tsgi.h"

#include "http_core.h"

#include "apr_lib.h"
#include "apr_strings.h"

#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <string.h>
#include <unistd.h>

tsgi_registry *tsgi_registry_get(apr_pool_t *pconf)
{
    void *v = NULL;
    tsgi_registry *reg;
    apr_pool_userdata_get(&v, "mod_tsgi.registry", pconf);
    if (v)
        return v;
    reg = apr_pcalloc(pconf, sizeof(*reg));
    reg->list = apr_array_make(pconf, 2, sizeof(tsgi_daemon *));
    apr_pool_userdata_set(reg, "mod_tsgi.registry", apr_pool_cleanup_null, pconf);
    return reg;
}

static tsgi_daemon *registry_find(apr_pool_t *pconf, const char *name)
{
    tsgi_registry *reg = tsgi_registry_get(pconf);
    int i;
    for (i = 0; i < reg->list->nelts; i++) {
        tsgi_daemon *d = APR_ARRAY_IDX(reg->list, i, tsgi_daemon *);
        if (!strcmp(d->name, name))
            return d;
    }
    return NULL;
}

void *tsgi_create_dir_conf(apr_pool_t *p, char *dir)
{
    return apr_pcalloc(p, sizeof(tsgi_dir_conf));
}

void *tsgi_merge_dir_conf(apr_pool_t *p, void *basev, void *addv)
{
    tsgi_dir_conf *base = basev, *add = addv, *c = apr_pcalloc(p, sizeof(*c));
    c->content = add->content_set ? add->content : base->content;
    c->in_location = add->content_set ? add->in_location : base->in_location;
    c->base_path = add->content_set ? add->base_path : base->base_path;
    c->content_set = add->content_set || base->content_set;
    c->authn = add->authn_set ? add->authn : base->authn;
    c->authn_set = add->authn_set || base->authn_set;
    c->authz = add->authz_set ? add->authz : base->authz;
    c->authz_set = add->authz_set || base->authz_set;
    c->log = add->log_set ? add->log : base->log;
    c->log_set = add->log_set || base->log_set;
    return c;
}

static const char *parse_int(cmd_parms *cmd, const char *key, const char *val, int min, int max, int *out)
{
    char *end;
    long v;
    errno = 0;
    v = strtol(val, &end, 10);
    if (!*val || *end || errno || v < min || v > max)
        return apr_psprintf(cmd->pool, "TsgiDaemon: %s=%s is not a whole number in %d..%d", key, val, min, max);
    *out = (int)v;
    return NULL;
}

/* Seconds, fractions allowed (e.g. 0.5). */
static const char *parse_seconds(cmd_parms *cmd, const char *key, const char *val, apr_interval_time_t *out)
{
    char *end;
    double v;
    errno = 0;
    v = strtod(val, &end);
    if (!*val || *end || errno || v < 0 || v > 86400 * 7)
        return apr_psprintf(cmd->pool, "TsgiDaemon: %s=%s is not a number of seconds", key, val);
    *out = (apr_interval_time_t)(v * APR_USEC_PER_SEC);
    return NULL;
}

/* Bytes with an optional K, M or G suffix. */
static const char *parse_size(cmd_parms *cmd, const char *key, const char *val, apr_off_t *out)
{
    char *end;
    apr_int64_t v;
    errno = 0;
    v = apr_strtoi64(val, &end, 10);
    if (end && *end && !end[1]) {
        switch (apr_toupper(*end)) {
        case 'K': v <<= 10; end++; break;
        case 'M': v <<= 20; end++; break;
        case 'G': v <<= 30; end++; break;
        }
    }
    if (!*val || (end && *end) || errno || v < 0)
        return apr_psprintf(cmd->pool, "TsgiDaemon: %s=%s is not a size in bytes (K, M, G suffixes allowed)", key, val);
    *out = (apr_off_t)v;
    return NULL;
}

/* Resolves a program name through PATH, as the shell would. */
static const char *find_program(apr_pool_t *p, const char *name)
{
    const char *path = getenv("PATH");
    char *dirs, *dir, *state;
    if (strchr(name, '/'))
        return access(name, X_OK) == 0 ? name : NULL;
    dirs = apr_pstrdup(p, path ? path : "/usr/local/bin:/usr/bin:/bin");
    for (dir = apr_strtok(dirs, ":", &state); dir; dir = apr_strtok(NULL, ":", &state)) {
        const char *full = apr_pstrcat(p, dir, "/", name, NULL);
        if (access(full, X_OK) == 0)
            return full;
    }
    return NULL;
}

static const char *resolve_user(cmd_parms *cmd, tsgi_daemon *d)
{
    if (d->user_name) {
        struct passwd *pw = getpwnam(d->user_name);
        if (!pw)
            return apr_psprintf(cmd->pool, "TsgiDaemon %s: unknown user '%s'", d->name, d->user_name);
        d->uid = pw->pw_uid;
        if (!d->group_name)
            d->gid = pw->pw_gid;
    }
    if (d->group_name) {
        struct group *gr = getgrnam(d->group_name);
        if (!gr)
            return apr_psprintf(cmd->pool, "TsgiDaemon %s: unknown group '%s'", d->name, d->group_name);
        d->gid = gr->gr_gid;
    }
    return NULL;
}

/* A name env= may keep: a portable variable name, not one of mod_tsgi's own. */
static int env_name_ok(const char *name)
{
    const char *p = name;
    if (!*p || apr_isdigit(*p) || !strncmp(name, "TSGI_", 5))
        return 0;
    for (; *p; p++)
        if (!apr_isalnum(*p) && *p != '_')
            return 0;
    return 1;
}

static const char *set_option(cmd_parms *cmd, tsgi_daemon *d, const char *key, const char *val)
{
    if (!strcasecmp(key, "handler"))
        d->handler = ap_server_root_relative(cmd->pool, val);
    else if (!strcasecmp(key, "processes"))
        return parse_int(cmd, key, val, 1, 512, &d->processes);
    else if (!strcasecmp(key, "node"))
        d->node = val;
    else if (!strcasecmp(key, "worker"))
        d->worker_js = ap_server_root_relative(cmd->pool, val);
    else if (!strcasecmp(key, "user"))
        d->user_name = val;
    else if (!strcasecmp(key, "group"))
        d->group_name = val;
    else if (!strcasecmp(key, "max-requests"))
        return parse_int(cmd, key, val, 0, INT_MAX, &d->max_requests);
    else if (!strcasecmp(key, "max-inflight"))
        return parse_int(cmd, key, val, 0, INT_MAX, &d->max_inflight);
    else if (!strcasecmp(key, "request-timeout"))
        return parse_seconds(cmd, key, val, &d->request_timeout);
    else if (!strcasecmp(key, "queue-timeout"))
        return parse_seconds(cmd, key, val, &d->queue_timeout);
    else if (!strcasecmp(key, "connect-timeout"))
        return parse_seconds(cmd, key, val, &d->connect_timeout);
    else if (!strcasecmp(key, "graceful-timeout"))
        return parse_seconds(cmd, key, val, &d->graceful_timeout);
    else if (!strcasecmp(key, "ws-idle-timeout"))
        return parse_seconds(cmd, key, val, &d->ws_idle_timeout);
    else if (!strcasecmp(key, "max-body"))
        return parse_size(cmd, key, val, &d->max_body);
    else if (!strcasecmp(key, "max-heap"))
        return parse_size(cmd, key, val, &d->max_heap);
    else if (!strcasecmp(key, "health") || !strcasecmp(key, "metrics")) {
        if (*val != '/' || ap_strchr_c(val, ' ') || ap_strchr_c(val, '\t'))
            return apr_psprintf(cmd->pool, "TsgiDaemon %s: %s=%s is not a URL path starting with /", d->name, key, val);
        *(strcasecmp(key, "health") ? &d->metrics_path : &d->health_path) = val;
    } else if (!strcasecmp(key, "socket-dir"))
        d->socket_dir = ap_server_root_relative(cmd->pool, val);
    else if (!strcasecmp(key, "env")) {
        if (!env_name_ok(val))
            return apr_psprintf(cmd->pool, "TsgiDaemon %s: env=%s is not a variable name (letters, digits, _; "
                                "TSGI_ names are mod_tsgi's)", d->name, val);
        APR_ARRAY_PUSH(d->env_keep, const char *) = val;
    } else
        return apr_psprintf(cmd->pool, "TsgiDaemon %s: unknown option '%s' (handler, processes, node, worker, user, "
                            "group, max-requests, max-inflight, request-timeout, queue-timeout, connect-timeout, "
                            "graceful-timeout, ws-idle-timeout, max-body, max-heap, health, metrics, socket-dir, clear-env, metrics-public, "
                            "server-timing, env)", d->name, key);
    return NULL;
}

/* A daemon with the defaults the README lists. */
static tsgi_daemon *daemon_new(cmd_parms *cmd, const char *name)
{
    tsgi_daemon *d = apr_pcalloc(cmd->pool, sizeof(*d));
    d->name = name;
    d->processes = 1;
    d->node = "node";
    d->worker_js = TSGI_DEFAULT_WORKER;
    d->request_timeout = apr_time_from_sec(60);
    d->queue_timeout = apr_time_from_sec(45);
    d->connect_timeout = apr_time_from_sec(15);
    d->graceful_timeout = apr_time_from_sec(15);
    d->ws_idle_timeout = apr_time_from_sec(3600);
    d->uid = (uid_t)-1; /* Apache's User/Group unless set; resolved at start */
    d->gid = (gid_t)-1;
    d->listen_fd = -1;
    d->env_keep = apr_array_make(cmd->pool, 4, sizeof(const char *));
    d->s = cmd->server;
    return d;
}

/* The words after the name: key=value options and the bare clear-env. */
static const char *daemon_options(cmd_parms *cmd, tsgi_daemon *d, const char *args)
{
    const char *word, *err;
    while (*(word = ap_getword_conf(cmd->pool, &args))) {
        char *eq = strchr(word, '=');
        if (!strcasecmp(word, "clear-env")) {
            d->clear_env = 1;
            continue;
        }
        if (!strcasecmp(word, "metrics-public")) {
            d->metrics_public = 1;
            continue;
        }
        if (!strcasecmp(word, "server-timing")) {
            d->server_timing = 1;
            continue;
        }
        if (!eq || eq == word)
            return apr_psprintf(cmd->pool, "TsgiDaemon %s: expected key=value, got '%s'", d->name, word);
        *eq = '\0';
        if ((err = set_option(cmd, d, word, eq + 1)))
            return err;
    }
    return NULL;
}

/* What a complete TsgiDaemon needs: a handler file, node, a worker script, a known user. */
static const char *daemon_check(cmd_parms *cmd, tsgi_daemon *d)
{
    apr_finfo_t fi;
    const char *node;
    if (!d->handler)
        return apr_psprintf(cmd->pool, "TsgiDaemon %s: handler=<path> is required", d->name);
    if (d->env_keep->nelts && !d->clear_env)
        return apr_psprintf(cmd->pool, "TsgiDaemon %s: env= lists what clear-env keeps; add clear-env (without it "
                            "the workers get all of Apache's environment)", d->name);
    if (apr_stat(&fi, d->handler, APR_FINFO_TYPE, cmd->pool) != APR_SUCCESS || fi.filetype != APR_REG)
        return apr_psprintf(cmd->pool, "TsgiDaemon %s: handler file not found: %s", d->name, d->handler);
    if (!(node = find_program(cmd->pool, d->node)))
        return apr_psprintf(cmd->pool, "TsgiDaemon %s: node executable not found: %s", d->name, d->node);
    d->node = node;
    if (!*d->worker_js)
        return apr_psprintf(cmd->pool, "TsgiDaemon %s: worker=<path to worker.js> is required", d->name);
    if (d->connect_timeout < apr_time_from_msec(100))
        return apr_psprintf(cmd->pool, "TsgiDaemon %s: connect-timeout must be at least 0.1 s", d->name);
    return resolve_user(cmd, d);
}

/* TsgiDaemon <name> handler=<path> [key=value ...] */
static const char *cmd_daemon(cmd_parms *cmd, void *dummy, const char *args)
{
    const char *err = ap_check_cmd_context(cmd, NOT_IN_DIR_LOC_FILE);
    const char *name;
    tsgi_daemon *d;
    if (err)
        return err;
    name = ap_getword_conf(cmd->pool, &args);
    if (!*name || strchr(name, '=') || strchr(name, '/'))
        return "TsgiDaemon: the first argument must be a daemon name (no '=' or '/')";
    if (registry_find(cmd->pool, name))
        return apr_psprintf(cmd->pool, "TsgiDaemon %s: defined twice", name);
    d = daemon_new(cmd, name);
    if ((err = daemon_options(cmd, d, args)) || (err = daemon_check(cmd, d)))
        return err;
    APR_ARRAY_PUSH(tsgi_registry_get(cmd->pool)->list, tsgi_daemon *) = d;
    return NULL;
}

/* ctx.basePath: a plain <Location /path> mounts the handler there, without a
 * trailing '/' (not <LocationMatch> or a "~" regex: those mount nowhere, ""). */
static const char *mount_path(cmd_parms *cmd, int in_location)
{
    char *b;
    size_t n;
    if (!in_location || strcasecmp(cmd->directive->parent->directive, "<Location") || !cmd->directive->parent->args ||
        cmd->directive->parent->args[0] == '~' || !cmd->path || cmd->path[0] != '/')
        return "";
    b = apr_pstrdup(cmd->pool, cmd->path);
    n = strlen(b);
    while (n > 0 && b[n - 1] == '/')
        b[--n] = '\0';
    return b;
}

static const char *cmd_use_daemon(cmd_parms *cmd, void *conf, const char *name)
{
    tsgi_dir_conf *c = conf;
    tsgi_daemon *d = registry_find(cmd->pool, name);
    int which = (int)(apr_uintptr_t)cmd->info;
    if (!d)
        return apr_psprintf(cmd->pool, "%s: unknown daemon '%s' (define it with TsgiDaemon first)",
                            cmd->cmd->name, name);
    switch (which) {
    case 0:
        c->content = d;
        c->content_set = 1;
        c->in_location = cmd->directive && cmd->directive->parent &&
                         !strncasecmp(cmd->directive->parent->directive, "<Location", 9);
        c->base_path = mount_path(cmd, c->in_location);
        break;
    case 1: c->authn = d; c->authn_set = 1; break;
    case 2: c->authz = d; c->authz_set = 1; break;
    default: c->log = d; c->log_set = 1; break;
    }
    return NULL;
}

static const char *cmd_sched_batch(cmd_parms *cmd, void *dummy, int on)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    if (err)
        return err;
    tsgi_registry_get(cmd->pool)->sched_batch = on;
    return NULL;
}

const command_rec tsgi_cmds[] = {
    AP_INIT_RAW_ARGS("TsgiDaemon", cmd_daemon, NULL, RSRC_CONF,
                     "TsgiDaemon <name> handler=<path> [processes=N node= worker= user= group= max-requests= "
                     "max-inflight= request-timeout= queue-timeout= connect-timeout= graceful-timeout= max-body= "
                     "socket-dir= clear-env env=NAME...]"),
    AP_INIT_TAKE1("TsgiDaemonName", cmd_use_daemon, (void *)0, RSRC_CONF | ACCESS_CONF,
                  "Daemon that serves SetHandler tsgi content here"),
    AP_INIT_TAKE1("TsgiAuthenticate", cmd_use_daemon, (void *)1, RSRC_CONF | ACCESS_CONF | OR_AUTHCFG,
                  "Daemon whose handler.authenticate runs as Apache's check_user_id phase"),
    AP_INIT_TAKE1("TsgiAuthorize", cmd_use_daemon, (void *)2, RSRC_CONF | ACCESS_CONF | OR_AUTHCFG,
                  "Daemon whose handler.authorize runs as Apache's auth_checker phase"),
    AP_INIT_TAKE1("TsgiLog", cmd_use_daemon, (void *)3, RSRC_CONF | ACCESS_CONF,
                  "Daemon whose handler.log runs in Apache's log_transaction phase"),
    AP_INIT_FLAG("TsgiSchedBatch", cmd_sched_batch, NULL, RSRC_CONF,
                 "On: the children's threads run as SCHED_BATCH (no wake-up preemption; more throughput "
                 "when Apache and its workers share cores). Default Off"),
    { NULL }
};
