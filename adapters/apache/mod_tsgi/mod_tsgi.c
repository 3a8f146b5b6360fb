/*
 * mod_tsgi: run tsgi handlers (TypeScript fetch-style handlers) in Node
 * workers that the Apache parent spawns and supervises, the way mod_wsgi's
 * daemon mode and mod_cgid do. Apache children talk to the workers over a
 * Unix socket with the binary framing in ../PROTOCOL.md (tsgi_proto.c).
 *
 *   TsgiDaemon app handler=/srv/app.ts processes=2
 *   <Location />
 *     SetHandler tsgi
 *     TsgiDaemonName app
 *   </Location>
 *
 * Layout: configuration, parent side (listener, spawning, supervision),
 * child side (connection pool, framing I/O), the request exchange, hooks,
 * and the module record at the bottom.
 */
#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_main.h"
#include "http_protocol.h"
#include "http_request.h"
#include "http_ssl.h"
#include "ap_mpm.h"
#include "mpm_common.h"
#include "unixd.h"
#include "util_filter.h"

#include "apr_strings.h"
#include "apr_thread_mutex.h"
#include "apr_thread_proc.h"
#include "apr_hash.h"
#include "apr_lib.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <sys/un.h>
#include <unistd.h>

#include "tsgi_proto.h"

/* build.ts writes tsgi_build.h (the default worker= path) next to the sources. */
#if defined(__has_include)
#if __has_include("tsgi_build.h")
#include "tsgi_build.h"
#endif
#endif
#ifndef TSGI_DEFAULT_WORKER
#define TSGI_DEFAULT_WORKER ""
#endif

#define TSGI_SECRET_LEN 32
/* A worker's "cannot start" exit status (EX_CONFIG), see PROTOCOL.md. */
#define TSGI_EXIT_STARTUP 78
/* A worker that dies this soon after its start counts as a failed start too. */
#define TSGI_QUICK_DEATH apr_time_from_sec(2)
/* Back-off between failed starts: 0.5 s, doubling, at most 30 s. */
#define TSGI_BACKOFF_FIRST apr_time_from_msec(500)
#define TSGI_BACKOFF_MAX apr_time_from_sec(30)
#define TSGI_READ_BUF 65536
#define TSGI_HANDLER_NAME "tsgi"

module AP_MODULE_DECLARE_DATA tsgi_module;

/* ================================================================ config */

typedef struct tsgi_conn tsgi_conn;

/* Per-process state of one daemon in an Apache child. */
typedef struct {
    apr_thread_mutex_t *mutex;
    tsgi_conn *idle;        /* stack of idle connections */
    int batch;              /* TsgiSchedBatch took effect: no per-exchange switch */
} tsgi_cpool;

typedef struct tsgi_worker tsgi_worker;

typedef struct {
    const char *name;
    const char *handler;
    const char *node;
    const char *worker_js;
    const char *user_name;
    const char *group_name;
    const char *socket_dir;
    uid_t uid;
    gid_t gid;
    int processes;
    int max_requests;
    int max_inflight;
    apr_interval_time_t request_timeout;
    apr_interval_time_t queue_timeout;
    apr_interval_time_t connect_timeout;
    apr_interval_time_t graceful_timeout;
    apr_off_t max_body;
    int clear_env;                 /* clear-env: only env= names of Apache's environment */
    apr_array_header_t *env_keep;  /* env=NAME (const char *) */
    server_rec *s;
    /* parent, set in post_config */
    apr_pool_t *pconf;     /* other-child registrations live here (see worker_maintenance) */
    const char *socket_path;
    int listen_fd;
    tsgi_worker **workers;
    /* child, set in child_init */
    tsgi_cpool *cpool;
} tsgi_daemon;

/* The daemons of one configuration generation, kept as pconf userdata. */
typedef struct {
    apr_array_header_t *list; /* tsgi_daemon* */
    int sched_batch;          /* TsgiSchedBatch: children's threads run as SCHED_BATCH */
} tsgi_registry;

typedef struct {
    tsgi_daemon *content;
    tsgi_daemon *authn;
    tsgi_daemon *authz;
    tsgi_daemon *log;
    int content_set, authn_set, authz_set, log_set;
    int in_location; /* TsgiDaemonName given in a <Location>: no file behind the URL */
    const char *base_path; /* ctx.basePath: that <Location>'s path without a trailing '/'; "" elsewhere */
} tsgi_dir_conf;

static tsgi_registry *registry_get(apr_pool_t *pconf)
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
    tsgi_registry *reg = registry_get(pconf);
    int i;
    for (i = 0; i < reg->list->nelts; i++) {
        tsgi_daemon *d = APR_ARRAY_IDX(reg->list, i, tsgi_daemon *);
        if (!strcmp(d->name, name))
            return d;
    }
    return NULL;
}

static void *create_dir_conf(apr_pool_t *p, char *dir)
{
    return apr_pcalloc(p, sizeof(tsgi_dir_conf));
}

static void *merge_dir_conf(apr_pool_t *p, void *basev, void *addv)
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
    else if (!strcasecmp(key, "max-body"))
        return parse_size(cmd, key, val, &d->max_body);
    else if (!strcasecmp(key, "socket-dir"))
        d->socket_dir = ap_server_root_relative(cmd->pool, val);
    else if (!strcasecmp(key, "env")) {
        if (!env_name_ok(val))
            return apr_psprintf(cmd->pool, "TsgiDaemon %s: env=%s is not a variable name (letters, digits, _; "
                                "TSGI_ names are mod_tsgi's)", d->name, val);
        APR_ARRAY_PUSH(d->env_keep, const char *) = val;
    } else
        return apr_psprintf(cmd->pool, "TsgiDaemon %s: unknown option '%s' (handler, processes, node, worker, user, "
                            "group, max-requests, max-inflight, request-timeout, queue-timeout, connect-timeout, "
                            "graceful-timeout, max-body, socket-dir, clear-env, env)", d->name, key);
    return NULL;
}

/* TsgiDaemon <name> handler=<path> [key=value ...] */
static const char *cmd_daemon(cmd_parms *cmd, void *dummy, const char *args)
{
    const char *err = ap_check_cmd_context(cmd, NOT_IN_DIR_LOC_FILE);
    tsgi_daemon *d;
    const char *word, *node;
    apr_finfo_t fi;
    if (err)
        return err;
    d = apr_pcalloc(cmd->pool, sizeof(*d));
    d->name = ap_getword_conf(cmd->pool, &args);
    if (!*d->name || strchr(d->name, '=') || strchr(d->name, '/'))
        return "TsgiDaemon: the first argument must be a daemon name (no '=' or '/')";
    if (registry_find(cmd->pool, d->name))
        return apr_psprintf(cmd->pool, "TsgiDaemon %s: defined twice", d->name);
    d->processes = 1;
    d->node = "node";
    d->worker_js = TSGI_DEFAULT_WORKER;
    d->request_timeout = apr_time_from_sec(60);
    d->queue_timeout = apr_time_from_sec(45);
    d->connect_timeout = apr_time_from_sec(15);
    d->graceful_timeout = apr_time_from_sec(15);
    d->uid = (uid_t)-1; /* Apache's User/Group unless set; resolved at start */
    d->gid = (gid_t)-1;
    d->listen_fd = -1;
    d->env_keep = apr_array_make(cmd->pool, 4, sizeof(const char *));
    d->s = cmd->server;
    while (*(word = ap_getword_conf(cmd->pool, &args))) {
        char *eq = strchr(word, '=');
        if (!strcasecmp(word, "clear-env")) {
            d->clear_env = 1;
            continue;
        }
        if (!eq || eq == word)
            return apr_psprintf(cmd->pool, "TsgiDaemon %s: expected key=value, got '%s'", d->name, word);
        *eq = '\0';
        if ((err = set_option(cmd, d, word, eq + 1)))
            return err;
    }
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
    if ((err = resolve_user(cmd, d)))
        return err;
    APR_ARRAY_PUSH(registry_get(cmd->pool)->list, tsgi_daemon *) = d;
    return NULL;
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
        /* A plain <Location /path> mounts the handler there (not <LocationMatch> or "~" regexes). */
        c->base_path = "";
        if (c->in_location && !strcasecmp(cmd->directive->parent->directive, "<Location") &&
            cmd->directive->parent->args && cmd->directive->parent->args[0] != '~' && cmd->path && cmd->path[0] == '/') {
            char *b = apr_pstrdup(cmd->pool, cmd->path);
            size_t n = strlen(b);
            while (n > 0 && b[n - 1] == '/')
                b[--n] = '\0';
            c->base_path = b;
        }
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
    registry_get(cmd->pool)->sched_batch = on;
    return NULL;
}

static const command_rec tsgi_cmds[] = {
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

/* ================================================================ parent */

/* One worker process slot; lives in its own subpool of the process pool so
 * a retired worker outlives the configuration generation that made it. */
struct tsgi_worker {
    apr_pool_t *pool;
    apr_proc_t proc;
    tsgi_daemon *d;       /* only valid while !retired */
    process_rec *process;
    int index;
    int retired;
    int failures;         /* failed starts in a row (exit 78, or a death within TSGI_QUICK_DEATH) */
    int status_fd;        /* read end of the worker's status pipe (fd 5 there), -1 when none */
    apr_time_t started;   /* when node was exec'd (after any back-off delay) */
    pid_t parent_pid;
    char **argv;
    char **envp;
    const char *cwd;
    const char *node;
    int listen_fd;
    uid_t uid;
    gid_t gid;
    const char *user_name;
    const char *home;
    gid_t *groups;        /* supplementary groups, resolved before fork */
    int ngroups;
};

/* Per-start secret, shared by every generation of one Apache run so old
 * children and new workers agree during a graceful restart. */
static const unsigned char *secret_get(process_rec *proc)
{
    void *v = NULL;
    unsigned char *sec;
    apr_pool_userdata_get(&v, "mod_tsgi.secret", proc->pool);
    if (v)
        return v;
    sec = apr_palloc(proc->pool, TSGI_SECRET_LEN);
    if (apr_generate_random_bytes(sec, TSGI_SECRET_LEN) != APR_SUCCESS)
        return NULL;
    apr_pool_userdata_set(sec, "mod_tsgi.secret", apr_pool_cleanup_null, proc->pool);
    return sec;
}

typedef struct {
    const char *path;
    const char *dir;
    pid_t owner;
    int fd;
} tsgi_listener;

static apr_status_t listener_cleanup(void *data)
{
    tsgi_listener *l = data;
    /* Children inherit the pools: only the parent removes files. */
    if (getpid() != l->owner || l->fd < 0)
        return APR_SUCCESS;
    close(l->fd);
    l->fd = -1;
    unlink(l->path);
    rmdir(l->dir);
    return APR_SUCCESS;
}

/* pconf cleanup: a graceful restart keeps the listener for the next
 * generation; only a stop (Apache exiting) removes it. Apache does not
 * destroy the process pool on exit, so this is where stop is seen. */
static apr_status_t listener_exit_cleanup(void *data)
{
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_EXITING)
        return listener_cleanup(data);
    return APR_SUCCESS;
}

/* The daemon's listening socket: made once per Apache start (process pool),
 * reused by every generation so a graceful restart never refuses a connect. */
static apr_status_t listener_get(server_rec *s, tsgi_daemon *d)
{
    apr_pool_t *pp = s->process->pool;
    const char *key = apr_pstrcat(s->process->pconf, "mod_tsgi.listener.", d->name, NULL);
    const char *base = d->socket_dir ? d->socket_dir : ap_runtime_dir_relative(s->process->pconf, "");
    const char *dir, *path;
    tsgi_listener *l = NULL;
    struct sockaddr_un sa;
    uid_t owner = geteuid() == 0 ? ap_unixd_config.user_id : geteuid();
    int fd;
    apr_pool_userdata_get((void **)&l, key, pp);
    dir = apr_psprintf(pp, "%s/tsgi.%ld", base, (long)getpid());
    path = apr_pstrcat(pp, dir, "/", d->name, ".sock", NULL);
    if (l && l->fd >= 0 && !strcmp(l->path, path)) {
        d->socket_path = l->path;
        d->listen_fd = l->fd;
        apr_pool_cleanup_register(s->process->pconf, l, listener_exit_cleanup, apr_pool_cleanup_null);
        return APR_SUCCESS;
    }
    if (strlen(path) >= sizeof(sa.sun_path)) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "mod_tsgi: socket path too long: %s (set socket-dir=)", path);
        return APR_ENAMETOOLONG;
    }
    /* 0700 and owned by the user Apache children run as: only they (and
     * root) may connect; workers never need the path, they inherit the fd. */
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, errno, s, "mod_tsgi: cannot create socket directory %s", dir);
        return errno;
    }
    if (chmod(dir, 0700) != 0 || (geteuid() == 0 && chown(dir, owner, (gid_t)-1) != 0)) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, errno, s, "mod_tsgi: cannot set up socket directory %s", dir);
        return errno;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return errno;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    strcpy(sa.sun_path, path);
    unlink(path); /* stale socket of a crashed run with a reused pid */
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || chmod(path, 0600) != 0 ||
        (geteuid() == 0 && chown(path, owner, (gid_t)-1) != 0) || listen(fd, 4096) != 0) {
        int err = errno;
        ap_log_error(APLOG_MARK, APLOG_CRIT, err, s, "mod_tsgi: cannot listen on %s", path);
        close(fd);
        return err;
    }
    l = apr_pcalloc(pp, sizeof(*l));
    l->path = path;
    l->dir = dir;
    l->owner = getpid();
    l->fd = fd;
    apr_pool_userdata_set(l, apr_pstrdup(pp, key), apr_pool_cleanup_null, pp);
    /* No cleanup on the process pool: this DSO is unloaded with pconf, so
     * a function pointer there would dangle at exit. Stop is handled by
     * listener_exit_cleanup on pconf. */
    apr_pool_cleanup_register(s->process->pconf, l, listener_exit_cleanup, apr_pool_cleanup_null);
    d->socket_path = path;
    d->listen_fd = fd;
    return APR_SUCCESS;
}

static void close_other_fds(int from)
{
    long max = sysconf(_SC_OPEN_MAX);
    int fd;
#ifdef SYS_close_range
    if (syscall(SYS_close_range, (unsigned)from, ~0U, 0) == 0)
        return;
#endif
    if (max < 0 || max > 65536)
        max = 65536;
    for (fd = from; fd < max; fd++)
        close(fd);
}

/* In the forked child: wait out the back-off, become the worker user and
 * exec node. Never returns. */
static void exec_worker(tsgi_worker *w, int secret_fd, int status_fd, apr_interval_time_t delay)
{
    sigset_t none;
    int devnull = open("/dev/null", O_RDONLY);
    int sig, listen_fd;
    setsid(); /* a terminal's Ctrl-C goes to Apache, which stops us cleanly */
    if (devnull >= 0)
        dup2(devnull, 0);
    dup2(2, 1); /* stdout and stderr both to Apache's error log */
    /* The contract is fd 3 = listener, fd 4 = secret, fd 5 = status: move
     * them out of the way first so no dup2 clobbers another. */
    listen_fd = fcntl(w->listen_fd, F_DUPFD, 10);
    secret_fd = fcntl(secret_fd, F_DUPFD, 10);
    status_fd = fcntl(status_fd, F_DUPFD, 10);
    if (listen_fd < 0 || secret_fd < 0 || status_fd < 0 || dup2(listen_fd, 3) < 0 || dup2(secret_fd, 4) < 0 ||
        dup2(status_fd, 5) < 0)
        _exit(126);
    close_other_fds(6);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            signal(sig, SIG_DFL);
    /* The back-off happens here, in the child, so the MPM parent never sleeps;
     * a SIGTERM (stop, graceful restart) ends the wait. */
    if (delay > 0) {
        struct timespec ts;
        ts.tv_sec = (time_t)(delay / APR_USEC_PER_SEC);
        ts.tv_nsec = (long)(delay % APR_USEC_PER_SEC) * 1000;
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
    }
    if (geteuid() == 0) {
        /* setgroups, not initgroups: no NSS lookups between fork and exec. */
        if (setgid(w->gid) != 0 || setgroups((size_t)w->ngroups, w->groups) != 0 || setuid(w->uid) != 0) {
            fprintf(stderr, "mod_tsgi: cannot switch to uid %ld gid %ld: %s\n", (long)w->uid, (long)w->gid,
                    strerror(errno));
            _exit(126);
        }
    }
    if (getuid() == 0 || geteuid() == 0) {
        fprintf(stderr, "mod_tsgi: refusing to run a worker as root\n");
        _exit(126);
    }
    if (chdir(w->cwd) != 0 && chdir("/") != 0)
        _exit(126);
    execve(w->node, w->argv, w->envp);
    fprintf(stderr, "mod_tsgi: cannot exec %s: %s\n", w->node, strerror(errno));
    _exit(127);
}

/* Workers of past generations that are still draining. Plain data in the
 * process pool: each new generation re-registers them as other children
 * (on its own pconf) so their exit is reaped quietly. */
static apr_array_header_t *retired_list(process_rec *proc)
{
    void *v = NULL;
    apr_pool_userdata_get(&v, "mod_tsgi.retired", proc->pool);
    if (!v) {
        v = apr_array_make(proc->pool, 8, sizeof(tsgi_worker *));
        apr_pool_userdata_set(v, "mod_tsgi.retired", apr_pool_cleanup_null, proc->pool);
    }
    return v;
}

static void retired_add(process_rec *proc, tsgi_worker *w)
{
    apr_array_header_t *list = retired_list(proc);
    int i;
    for (i = 0; i < list->nelts; i++) {
        if (!APR_ARRAY_IDX(list, i, tsgi_worker *)) {
            APR_ARRAY_IDX(list, i, tsgi_worker *) = w;
            return;
        }
    }
    APR_ARRAY_PUSH(list, tsgi_worker *) = w;
}

static void retired_forget(process_rec *proc, tsgi_worker *w)
{
    apr_array_header_t *list = retired_list(proc);
    int i;
    for (i = 0; i < list->nelts; i++)
        if (APR_ARRAY_IDX(list, i, tsgi_worker *) == w)
            APR_ARRAY_IDX(list, i, tsgi_worker *) = NULL;
    apr_pool_destroy(w->pool);
}

static void worker_maintenance(int reason, void *data, int status);

static apr_status_t spawn_worker(tsgi_worker *w, server_rec *s, const unsigned char *secret, apr_interval_time_t delay)
{
    int pipefd[2], statusfd[2];
    char hex[TSGI_SECRET_LEN * 2 + 1];
    pid_t pid;
    ssize_t n;
    if (pipe(pipefd) != 0)
        return errno;
    if (pipe2(statusfd, O_CLOEXEC) != 0) {
        int err = errno;
        close(pipefd[0]);
        close(pipefd[1]);
        return err;
    }
    pid = fork();
    if (pid < 0) {
        int err = errno;
        close(pipefd[0]);
        close(pipefd[1]);
        close(statusfd[0]);
        close(statusfd[1]);
        return err;
    }
    if (pid == 0) {
        close(pipefd[1]);
        close(statusfd[0]);
        exec_worker(w, pipefd[0], statusfd[1], delay);
    }
    close(pipefd[0]);
    close(statusfd[1]);
    fcntl(statusfd[0], F_SETFL, O_NONBLOCK);
    w->status_fd = statusfd[0];
    ap_bin2hex(secret, TSGI_SECRET_LEN, hex);
    /* 64 bytes fit the pipe buffer: never blocks, even before the exec. */
    n = write(pipefd[1], hex, TSGI_SECRET_LEN * 2);
    close(pipefd[1]);
    if (n != TSGI_SECRET_LEN * 2)
        ap_log_error(APLOG_MARK, APLOG_ERR, errno, s, "mod_tsgi: cannot pass the secret to worker %d", (int)pid);
    w->proc.pid = pid;
    w->proc.in = w->proc.out = w->proc.err = NULL;
    w->started = apr_time_now() + delay;
    /* Registered on pconf, never on a longer-lived pool: worker_maintenance
     * lives in this DSO, which Apache unloads and reloads on every restart. */
    apr_proc_other_child_register(&w->proc, worker_maintenance, w, NULL, w->d->pconf);
    ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, "mod_tsgi: daemon %s: started worker #%d, pid %d", w->d->name,
                 w->index, (int)pid);
    return APR_SUCCESS;
}

/* What a worker that could not start wrote on its status pipe (one line),
 * or "" when it wrote nothing; the pipe is closed either way. */
static const char *status_reason(tsgi_worker *w, char *buf, size_t size)
{
    ssize_t n = -1;
    if (w->status_fd >= 0) {
        n = read(w->status_fd, buf, size - 1);
        close(w->status_fd);
        w->status_fd = -1;
    }
    if (n <= 0)
        n = 0;
    buf[n] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    return buf;
}

/* The next back-off after `failures` failed starts in a row. */
static apr_interval_time_t backoff(int failures)
{
    apr_interval_time_t d = TSGI_BACKOFF_FIRST;
    while (--failures > 0 && d < TSGI_BACKOFF_MAX)
        d *= 2;
    return d < TSGI_BACKOFF_MAX ? d : TSGI_BACKOFF_MAX;
}

static void worker_maintenance(int reason, void *data, int status)
{
    tsgi_worker *w = data;
    server_rec *s = ap_server_conf;
    int mpm_state = AP_MPMQ_STOPPING;
    const unsigned char *secret;
    const char *said;
    char why[512];
    apr_interval_time_t delay = 0;
    if (getpid() != w->parent_pid)
        return;
    switch (reason) {
    case APR_OC_REASON_DEATH:
    case APR_OC_REASON_LOST:
        apr_proc_other_child_unregister(w);
        ap_mpm_query(AP_MPMQ_MPM_STATE, &mpm_state);
        if (w->retired || mpm_state == AP_MPMQ_STOPPING)
            status_reason(w, why, sizeof(why));
        if (w->retired) {
            retired_forget(w->process, w);
            return;
        }
        if (mpm_state == AP_MPMQ_STOPPING)
            return;
        /* The MPM passes the exit code or the signal number, already decoded
         * and without saying which. 0 is a clean exit: max-requests or a drain. */
        said = status_reason(w, why, sizeof(why));
        if (status == 0) {
            ap_log_error(APLOG_MARK, APLOG_INFO, 0, s, "mod_tsgi: daemon %s: worker #%d (pid %d) exited cleanly; "
                         "restarting", w->d->name, w->index, (int)w->proc.pid);
            w->failures = 0;
        } else if (status == TSGI_EXIT_STARTUP || apr_time_now() - w->started < TSGI_QUICK_DEATH) {
            /* A failed start (bad handler, failing init): back off, one line
             * per attempt saying why. */
            delay = backoff(++w->failures);
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, "mod_tsgi: daemon %s: worker #%d (pid %d) could not start: %s; "
                         "next attempt in %g s", w->d->name, w->index, (int)w->proc.pid,
                         *said ? said : apr_psprintf(w->pool, "it ended with exit code or signal %d", status),
                         (double)delay / APR_USEC_PER_SEC);
        } else {
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, s, "mod_tsgi: daemon %s: worker #%d (pid %d) ended with exit "
                         "code or signal %d; restarting", w->d->name, w->index, (int)w->proc.pid, status);
            w->failures = 0;
        }
        secret = secret_get(w->d->s->process);
        if (!secret || spawn_worker(w, s, secret, delay) != APR_SUCCESS)
            ap_log_error(APLOG_MARK, APLOG_CRIT, errno, s, "mod_tsgi: daemon %s: cannot restart worker #%d",
                         w->d->name, w->index);
        break;
    /* APR_OC_REASON_RESTART needs nothing: retire_workers (a pconf
     * cleanup) already told this generation to drain. */
    default:
        break;
    }
}

typedef struct {
    tsgi_daemon *d;
    pid_t parent_pid;
} tsgi_generation;

/* pconf cleanup: the generation that spawned these workers is over (graceful
 * restart or stop): SIGTERM lets them finish in-flight work and exit. */
static apr_status_t retire_workers(void *data)
{
    tsgi_generation *g = data;
    int i;
    if (getpid() != g->parent_pid)
        return APR_SUCCESS;
    for (i = 0; i < g->d->processes; i++) {
        tsgi_worker *w = g->d->workers[i];
        if (w && !w->retired) {
            w->retired = 1;
            w->d = NULL;
            kill(w->proc.pid, SIGTERM);
            retired_add(w->process, w);
        }
    }
    return APR_SUCCESS;
}

/* pconf cleanup registered before the daemons' retire_workers, so it runs
 * after all of them: on stop (not on graceful restart) wait for the workers
 * to drain, and SIGKILL those still there graceful-timeout + 2 s later. */
static apr_status_t reap_on_exit(void *data)
{
    tsgi_registry *reg = data;
    apr_time_t deadline = apr_time_now();
    int i, j, left;
    if (ap_state_query(AP_SQ_MAIN_STATE) != AP_SQ_MS_EXITING)
        return APR_SUCCESS;
    for (i = 0; i < reg->list->nelts; i++) {
        tsgi_daemon *d = APR_ARRAY_IDX(reg->list, i, tsgi_daemon *);
        if (apr_time_now() + d->graceful_timeout + apr_time_from_sec(2) > deadline)
            deadline = apr_time_now() + d->graceful_timeout + apr_time_from_sec(2);
    }
    do {
        left = 0;
        for (i = 0; i < reg->list->nelts; i++) {
            tsgi_daemon *d = APR_ARRAY_IDX(reg->list, i, tsgi_daemon *);
            for (j = 0; d->workers && j < d->processes; j++) {
                tsgi_worker *w = d->workers[j];
                if (!w || w->proc.pid <= 0 || w->parent_pid != getpid())
                    continue;
                if (waitpid(w->proc.pid, NULL, WNOHANG) != 0) {
                    w->proc.pid = -1; /* exited (or not our child any more) */
                    continue;
                }
                if (apr_time_now() >= deadline) {
                    kill(w->proc.pid, SIGKILL);
                    waitpid(w->proc.pid, NULL, 0);
                    w->proc.pid = -1;
                    continue;
                }
                left++;
            }
        }
        if (left)
            apr_sleep(apr_time_from_msec(20));
    } while (left);
    return APR_SUCCESS;
}

/* Whether the environment entry e ("NAME=value") is the variable name. */
static int env_is(const char *e, const char *name)
{
    size_t n = strlen(name);
    return !strncmp(e, name, n) && e[n] == '=';
}

/* Whether Apache's variable e reaches the workers: all but the identity and
 * mod_tsgi's own (TSGI_*), or with clear-env only PATH and the env= names. */
static int env_kept(const tsgi_daemon *d, const char *e)
{
    int i;
    if (!strncmp(e, "TSGI_", 5) || env_is(e, "HOME") || env_is(e, "USER") || env_is(e, "LOGNAME") || env_is(e, "PWD"))
        return 0;
    if (!d->clear_env)
        return 1;
    if (env_is(e, "PATH"))
        return 1;
    for (i = 0; i < d->env_keep->nelts; i++)
        if (env_is(e, APR_ARRAY_IDX(d->env_keep, i, const char *)))
            return 1;
    return 0;
}

/*
 * A worker's environment: Apache's (see env_kept), the worker user's HOME,
 * USER and LOGNAME as `setpriv --reset-env` or a login sets them, PWD = its
 * working directory, and the TSGI_* contract (PROTOCOL.md).
 */
static char **build_env(apr_pool_t *p, tsgi_daemon *d, tsgi_worker *w)
{
    extern char **environ;
    apr_array_header_t *env = apr_array_make(p, 32, sizeof(char *));
    char **e;
    int path = 0;
    for (e = environ; *e; e++) {
        if (env_kept(d, *e)) {
            APR_ARRAY_PUSH(env, char *) = *e;
            path |= env_is(*e, "PATH");
        }
    }
    if (!path && d->clear_env)
        APR_ARRAY_PUSH(env, char *) = "PATH=/usr/local/bin:/usr/bin:/bin";
    APR_ARRAY_PUSH(env, char *) = apr_pstrcat(p, "HOME=", w->home, NULL);
    APR_ARRAY_PUSH(env, char *) = apr_pstrcat(p, "USER=", w->user_name, NULL);
    APR_ARRAY_PUSH(env, char *) = apr_pstrcat(p, "LOGNAME=", w->user_name, NULL);
    APR_ARRAY_PUSH(env, char *) = apr_pstrcat(p, "PWD=", w->cwd, NULL);
    APR_ARRAY_PUSH(env, char *) = apr_pstrcat(p, "TSGI_HANDLER=", d->handler, NULL);
    APR_ARRAY_PUSH(env, char *) = apr_pstrcat(p, "TSGI_DAEMON=", d->name, NULL);
    APR_ARRAY_PUSH(env, char *) = "TSGI_LISTEN_FD=3";
    APR_ARRAY_PUSH(env, char *) = "TSGI_SECRET_FD=4";
    APR_ARRAY_PUSH(env, char *) = "TSGI_STATUS_FD=5";
    APR_ARRAY_PUSH(env, char *) = apr_psprintf(p, "TSGI_WORKER_INDEX=%d", w->index);
    APR_ARRAY_PUSH(env, char *) = apr_psprintf(p, "TSGI_MAX_REQUESTS=%d", d->max_requests);
    APR_ARRAY_PUSH(env, char *) = apr_psprintf(p, "TSGI_MAX_INFLIGHT=%d", d->max_inflight);
    APR_ARRAY_PUSH(env, char *) = apr_psprintf(p, "TSGI_QUEUE_TIMEOUT=%g", (double)d->queue_timeout / APR_USEC_PER_SEC);
    APR_ARRAY_PUSH(env, char *) = apr_psprintf(p, "TSGI_REQUEST_TIMEOUT=%g",
                                              (double)d->request_timeout / APR_USEC_PER_SEC);
    APR_ARRAY_PUSH(env, char *) = apr_psprintf(p, "TSGI_GRACEFUL_TIMEOUT=%g",
                                              (double)d->graceful_timeout / APR_USEC_PER_SEC);
    APR_ARRAY_PUSH(env, char *) = apr_psprintf(p, "TSGI_MAX_BODY=%" APR_OFF_T_FMT, d->max_body);
    APR_ARRAY_PUSH(env, char *) = NULL;
    return (char **)env->elts;
}

/* The worker user's name and home directory (its number and / without a passwd entry). */
static void resolve_identity(apr_pool_t *p, tsgi_worker *w)
{
    struct passwd *pw = getpwuid(w->uid);
    w->user_name = pw ? apr_pstrdup(p, pw->pw_name) : apr_psprintf(p, "%ld", (long)w->uid);
    w->home = pw && pw->pw_dir && *pw->pw_dir ? apr_pstrdup(p, pw->pw_dir) : "/";
}

/* The worker user's supplementary groups (like initgroups would set). */
static void resolve_groups(apr_pool_t *p, tsgi_worker *w)
{
    int n = 64;
    gid_t *g = apr_palloc(p, sizeof(gid_t) * n);
    if (getgrouplist(w->user_name, w->gid, g, &n) < 0) {
        g = apr_palloc(p, sizeof(gid_t) * (n > 0 ? n : 1));
        if (getgrouplist(w->user_name, w->gid, g, &n) < 0) {
            g[0] = w->gid;
            n = 1;
        }
    }
    w->groups = g;
    w->ngroups = n;
}

static int start_daemon(apr_pool_t *pconf, server_rec *s, tsgi_daemon *d, const unsigned char *secret)
{
    tsgi_generation *g;
    apr_finfo_t fi;
    uid_t uid = geteuid();
    gid_t gid = getegid();
    int i;
    /* User/Group may come after TsgiDaemon in the file: defaults apply now. */
    if (geteuid() == 0) {
        uid = d->uid != (uid_t)-1 ? d->uid : ap_unixd_config.user_id;
        gid = d->gid != (gid_t)-1 ? d->gid : ap_unixd_config.group_id;
    }
    if (uid == 0) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s,
                     "mod_tsgi: daemon %s: refusing to run workers as root; set user= (and group=) "
                     "or Apache's User to an unprivileged account", d->name);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (apr_stat(&fi, d->worker_js, APR_FINFO_TYPE, pconf) != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "mod_tsgi: daemon %s: worker script not found: %s (worker=)",
                     d->name, d->worker_js);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (listener_get(s, d) != APR_SUCCESS)
        return HTTP_INTERNAL_SERVER_ERROR;
    d->pconf = pconf;
    d->workers = apr_pcalloc(pconf, sizeof(tsgi_worker *) * d->processes);
    for (i = 0; i < d->processes; i++) {
        apr_pool_t *wp;
        tsgi_worker *w;
        char *cwd;
        apr_pool_create(&wp, s->process->pool);
        w = apr_pcalloc(wp, sizeof(*w));
        w->pool = wp;
        w->d = d;
        w->process = s->process;
        w->index = i;
        w->status_fd = -1;
        w->parent_pid = getpid();
        w->node = apr_pstrdup(wp, d->node);
        w->argv = apr_palloc(wp, 4 * sizeof(char *));
        w->argv[0] = apr_pstrdup(wp, d->node);
        /* Stack traces name the handler's own source lines (the bundle and
         * core's TypeScript loader carry inline source maps). */
        w->argv[1] = "--enable-source-maps";
        w->argv[2] = apr_pstrdup(wp, d->worker_js);
        w->argv[3] = NULL;
        cwd = ap_make_dirstr_parent(wp, d->handler);
        if (strlen(cwd) > 1 && cwd[strlen(cwd) - 1] == '/')
            cwd[strlen(cwd) - 1] = '\0'; /* no trailing slash: PWD as a shell writes it */
        w->cwd = cwd;
        w->listen_fd = d->listen_fd;
        w->uid = uid;
        w->gid = gid;
        resolve_identity(wp, w);
        resolve_groups(wp, w);
        w->envp = build_env(wp, d, w);
        d->workers[i] = w;
        if (spawn_worker(w, s, secret, 0) != APR_SUCCESS) {
            ap_log_error(APLOG_MARK, APLOG_CRIT, errno, s, "mod_tsgi: daemon %s: cannot fork a worker", d->name);
            return HTTP_INTERNAL_SERVER_ERROR;
        }
    }
    g = apr_palloc(pconf, sizeof(*g));
    g->d = d;
    g->parent_pid = getpid();
    apr_pool_cleanup_register(pconf, g, retire_workers, apr_pool_cleanup_null);
    return OK;
}

/* Re-registers still-draining workers of past generations with this
 * generation's pconf (and this load of the DSO's worker_maintenance). */
static void adopt_retired(apr_pool_t *pconf, process_rec *proc)
{
    apr_array_header_t *list = retired_list(proc);
    int i;
    for (i = 0; i < list->nelts; i++) {
        tsgi_worker *w = APR_ARRAY_IDX(list, i, tsgi_worker *);
        if (!w)
            continue;
        if (kill(w->proc.pid, 0) == 0 || errno == EPERM)
            apr_proc_other_child_register(&w->proc, worker_maintenance, w, NULL, pconf);
        else
            retired_forget(proc, w);
    }
}

static int tsgi_post_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s)
{
    tsgi_registry *reg = registry_get(pconf);
    const unsigned char *secret;
    int i, rc;
    /* The first of Apache's two config passes only checks the config. */
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG || reg->list->nelts == 0)
        return OK;
    if (!(secret = secret_get(s->process))) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "mod_tsgi: cannot generate the per-start secret");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    adopt_retired(pconf, s->process);
    apr_pool_cleanup_register(pconf, reg, reap_on_exit, apr_pool_cleanup_null);
    for (i = 0; i < reg->list->nelts; i++)
        if ((rc = start_daemon(pconf, s, APR_ARRAY_IDX(reg->list, i, tsgi_daemon *), secret)) != OK)
            return rc;
    return OK;
}

/* ================================================================ child */

struct tsgi_conn {
    int fd;
    int goaway;        /* worker is draining: never reuse */
    int used;          /* served at least one exchange */
    int sent;          /* wrote since the last read: a read now would only say EAGAIN */
    int client_fd;     /* client socket to watch for a hang-up, -1 when idle */
    size_t start, end; /* unread bytes in buf */
    struct tsgi_conn *next;
    unsigned char buf[TSGI_READ_BUF];
};

static void conn_close(tsgi_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    free(c);
}

static apr_status_t cpool_cleanup(void *data)
{
    tsgi_cpool *cp = data;
    while (cp->idle) {
        tsgi_conn *c = cp->idle;
        cp->idle = c->next;
        conn_close(c);
    }
    return APR_SUCCESS;
}

static void tsgi_child_init(apr_pool_t *pchild, server_rec *s)
{
    tsgi_registry *reg = registry_get(s->process->pconf);
    int i, j;
    int batch = 0;
    /* The MPM creates its threads after child_init; they inherit the policy. */
    if (reg->sched_batch) {
        struct sched_param sp = { 0 };
        batch = sched_setscheduler(0, SCHED_BATCH, &sp) == 0;
        if (!batch)
            ap_log_error(APLOG_MARK, APLOG_WARNING, errno, s, "mod_tsgi: TsgiSchedBatch: sched_setscheduler failed");
    }
    for (i = 0; i < reg->list->nelts; i++) {
        tsgi_daemon *d = APR_ARRAY_IDX(reg->list, i, tsgi_daemon *);
        d->cpool = apr_pcalloc(pchild, sizeof(tsgi_cpool));
        d->cpool->batch = batch;
        apr_thread_mutex_create(&d->cpool->mutex, APR_THREAD_MUTEX_DEFAULT, pchild);
        apr_pool_cleanup_register(pchild, d->cpool, cpool_cleanup, apr_pool_cleanup_null);
        /* Children never accept: drop the inherited listener (and the workers' status pipes). */
        if (d->listen_fd >= 0) {
            close(d->listen_fd);
            d->listen_fd = -1;
        }
        for (j = 0; d->workers && j < d->processes; j++) {
            if (d->workers[j] && d->workers[j]->status_fd >= 0) {
                close(d->workers[j]->status_fd);
                d->workers[j]->status_fd = -1;
            }
        }
    }
}

/* Milliseconds left until deadline for poll(); -1 = no deadline. */
static int ms_left(apr_time_t deadline)
{
    apr_time_t left;
    if (!deadline)
        return -1;
    left = deadline - apr_time_now();
    if (left <= 0)
        return 0;
    return (int)((left + 999) / 1000);
}

/* I/O results besides APR_SUCCESS. */
#define TSGI_IO_EOF APR_EOF
#define TSGI_IO_TIMEOUT APR_TIMEUP

/* Client disconnected while we waited for the worker. */
#define TSGI_IO_CLIENT_GONE APR_ECONNABORTED

/*
 * Waits for the worker socket. While a request is in progress, also watches
 * the client socket for a hang-up (POLLRDHUP: the client closed; pipelined
 * bytes do not trigger it), so request.signal aborts without waiting for the
 * response to fail on write.
 */
static apr_status_t wait_fd(int fd, short events, apr_time_t deadline, int client_fd)
{
    struct pollfd pfd[2];
    int rc, n = 1;
    pfd[0].fd = fd;
    pfd[0].events = events;
    pfd[0].revents = 0;
    if (client_fd >= 0) {
        pfd[1].fd = client_fd;
        pfd[1].events = POLLRDHUP;
        pfd[1].revents = 0;
        n = 2;
    }
    do {
        rc = poll(pfd, n, ms_left(deadline));
    } while (rc < 0 && errno == EINTR);
    if (rc < 0)
        return errno;
    if (rc == 0)
        return TSGI_IO_TIMEOUT;
    if (n == 2 && !pfd[0].revents && (pfd[1].revents & (POLLRDHUP | POLLHUP | POLLERR)))
        return TSGI_IO_CLIENT_GONE;
    return APR_SUCCESS;
}

static apr_status_t conn_writev(tsgi_conn *c, struct iovec *iov, int n, apr_time_t deadline)
{
    c->sent = 1;
    while (n > 0) {
        struct msghdr msg;
        ssize_t w;
        memset(&msg, 0, sizeof(msg));
        msg.msg_iov = iov;
        msg.msg_iovlen = n > IOV_MAX ? IOV_MAX : n;
        /* MSG_NOSIGNAL: a worker that just died must give EPIPE, not SIGPIPE. */
        w = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
        if (w < 0) {
            apr_status_t rv;
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                return errno;
            if ((rv = wait_fd(c->fd, POLLOUT, deadline, c->client_fd)) != APR_SUCCESS)
                return rv;
            continue;
        }
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= w;
        }
    }
    return APR_SUCCESS;
}

static apr_status_t conn_write(tsgi_conn *c, const void *p, size_t len, apr_time_t deadline)
{
    struct iovec iov;
    iov.iov_base = (void *)p;
    iov.iov_len = len;
    return conn_writev(c, &iov, 1, deadline);
}

/* Reads more bytes into the buffer (which must have room). */
static apr_status_t conn_fill(tsgi_conn *c, apr_time_t deadline)
{
    for (;;) {
        ssize_t r;
        if (c->start == c->end)
            c->start = c->end = 0;
        if (c->sent) {
            /* The reply cannot be there yet: poll first, saving a read. */
            apr_status_t rv = wait_fd(c->fd, POLLIN, deadline, c->client_fd);
            c->sent = 0;
            if (rv != APR_SUCCESS)
                return rv;
        }
        r = read(c->fd, c->buf + c->end, sizeof(c->buf) - c->end);
        if (r > 0) {
            c->end += (size_t)r;
            return APR_SUCCESS;
        }
        if (r == 0)
            return TSGI_IO_EOF;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN) {
            apr_status_t rv = wait_fd(c->fd, POLLIN, deadline, c->client_fd);
            if (rv != APR_SUCCESS)
                return rv;
            continue;
        }
        return errno;
    }
}

/* Copies exactly n bytes into dst (dst may be NULL to discard). */
static apr_status_t conn_read(tsgi_conn *c, unsigned char *dst, size_t n, apr_time_t deadline)
{
    while (n > 0) {
        size_t have = c->end - c->start;
        apr_status_t rv;
        if (have) {
            size_t take = have < n ? have : n;
            if (dst) {
                memcpy(dst, c->buf + c->start, take);
                dst += take;
            }
            c->start += take;
            n -= take;
            continue;
        }
        if ((rv = conn_fill(c, deadline)) != APR_SUCCESS)
            return rv;
    }
    return APR_SUCCESS;
}

typedef struct {
    tsgi_frame f;
    unsigned char *payload; /* NULL for BODY: the caller reads the data itself */
    tsgi_msg m;
} tsgi_in;

/* Reads one frame header and, except for BODY, its payload (into pool). */
static apr_status_t read_frame(tsgi_conn *c, apr_pool_t *p, apr_time_t deadline, tsgi_in *in, int *proto_err)
{
    unsigned char hdr[TSGI_HDR_LEN];
    apr_status_t rv;
    int rc;
    *proto_err = 0;
    if ((rv = conn_read(c, hdr, TSGI_HDR_LEN, deadline)) != APR_SUCCESS)
        return rv;
    if ((rc = tsgi_frame_parse(hdr, &in->f)) != TSGI_OK) {
        *proto_err = rc;
        return APR_EGENERAL;
    }
    in->payload = NULL;
    if (in->f.type == TSGI_BODY)
        return APR_SUCCESS;
    in->payload = in->f.len ? apr_palloc(p, in->f.len) : (unsigned char *)"";
    if ((rv = conn_read(c, in->payload, in->f.len, deadline)) != APR_SUCCESS)
        return rv;
    if ((rc = tsgi_decode(&in->f, in->payload, &in->m)) != TSGI_OK) {
        *proto_err = rc;
        return APR_EGENERAL;
    }
    return APR_SUCCESS;
}

/* An idle pooled connection is reusable unless the worker went away
 * (EOF) or announced GOAWAY while it sat in the pool. */
static int conn_alive(tsgi_conn *c)
{
    struct pollfd pfd;
    pfd.fd = c->fd;
    pfd.events = POLLIN;
    if (c->start != c->end)
        return 0; /* unsolicited bytes: GOAWAY or garbage, both mean stop */
    if (poll(&pfd, 1, 0) == 0)
        return 1;
    return 0;
}

static apr_status_t conn_connect(tsgi_daemon *d, request_rec *r, tsgi_conn **out)
{
    apr_time_t deadline = apr_time_now() + d->connect_timeout;
    const unsigned char *secret = secret_get(r->server->process);
    unsigned char hello[TSGI_HDR_LEN + 6 + TSGI_SECRET_LEN];
    struct sockaddr_un sa;
    tsgi_conn *c;
    tsgi_in in;
    apr_status_t rv;
    int perr, fd;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    apr_cpystrn(sa.sun_path, d->socket_path, sizeof(sa.sun_path));
    for (;;) {
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
            return errno;
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
            break;
        rv = errno;
        close(fd);
        /* Backlog full (EAGAIN) or listener briefly missing: retry until
         * connect-timeout, like mod_wsgi's connect loop. */
        if (rv != EAGAIN && rv != ECONNREFUSED && rv != ENOENT)
            return rv;
        if (apr_time_now() >= deadline)
            return TSGI_IO_TIMEOUT;
        apr_sleep(apr_time_from_msec(20));
    }
    c = malloc(sizeof(*c));
    if (!c) {
        close(fd);
        return APR_ENOMEM;
    }
    c->fd = fd;
    c->goaway = c->used = c->sent = 0;
    c->client_fd = -1;
    c->start = c->end = 0;
    c->next = NULL;
    tsgi_encode_hello(hello, (uint32_t)getpid(), secret, TSGI_SECRET_LEN);
    rv = conn_write(c, hello, sizeof(hello), deadline);
    /* WELCOME proves a worker accepted; the backlog alone does not. */
    if (rv == APR_SUCCESS)
        rv = read_frame(c, r->pool, deadline, &in, &perr);
    if (rv == APR_SUCCESS && in.f.type != TSGI_WELCOME)
        rv = APR_EGENERAL;
    if (rv != APR_SUCCESS) {
        conn_close(c);
        return rv;
    }
    *out = c;
    return APR_SUCCESS;
}

static apr_status_t conn_acquire(tsgi_daemon *d, request_rec *r, tsgi_conn **out)
{
    tsgi_cpool *cp = d->cpool;
    for (;;) {
        tsgi_conn *c;
        apr_thread_mutex_lock(cp->mutex);
        c = cp->idle;
        if (c)
            cp->idle = c->next;
        apr_thread_mutex_unlock(cp->mutex);
        if (!c)
            return conn_connect(d, r, out);
        if (conn_alive(c)) {
            *out = c;
            return APR_SUCCESS;
        }
        conn_close(c);
    }
}

static void conn_release(tsgi_daemon *d, tsgi_conn *c, int reusable)
{
    if (!reusable || c->goaway) {
        conn_close(c);
        return;
    }
    c->used = 1;
    c->client_fd = -1;
    apr_thread_mutex_lock(d->cpool->mutex);
    c->next = d->cpool->idle;
    d->cpool->idle = c;
    apr_thread_mutex_unlock(d->cpool->mutex);
}

/* Tells the worker to abort request.signal, then drops the connection. */
static void conn_abort(tsgi_conn *c, int reason)
{
    unsigned char buf[TSGI_HDR_LEN + 1];
    tsgi_encode_abort(buf, (uint8_t)reason);
    (void)!send(c->fd, buf, sizeof(buf), MSG_NOSIGNAL | MSG_DONTWAIT);
    conn_close(c);
}

/* ================================================================ exchange */

/* The client's socket, to notice a hang-up while the worker computes.
 * Not for HTTP/2 streams: their socket belongs to the whole connection. */
static int client_socket_fd(request_rec *r)
{
    conn_rec *c = r->connection;
    apr_socket_t *sock;
    apr_os_sock_t fd;
    if (c->master)
        return -1;
    sock = ap_get_conn_socket(c);
    if (!sock || apr_os_sock_get(&fd, sock) != APR_SUCCESS)
        return -1;
    return fd;
}

static const char *request_id(request_rec *r)
{
    const char *id = apr_table_get(r->subprocess_env, "UNIQUE_ID");
    if (id)
        return id;
    if (!r->log_id) {
        const char *gen = NULL;
        if (ap_run_generate_log_id(r->connection, r, &gen) == OK && gen)
            r->log_id = gen;
        else
            r->log_id = apr_psprintf(r->pool, "%" APR_PID_T_FMT "-%pp", getpid(), (void *)r);
    }
    return r->log_id;
}

static tsgi_str S(const char *s)
{
    tsgi_str t;
    t.p = s ? s : "";
    t.len = s ? strlen(s) : 0;
    return t;
}

static const char *request_host(request_rec *r)
{
    const char *h = apr_table_get(r->headers_in, "Host");
    apr_port_t port;
    if (h && *h)
        return h;
    port = ap_get_server_port(r);
    if (ap_is_default_port(port, r))
        return ap_get_server_name_for_url(r);
    return apr_psprintf(r->pool, "%s:%u", ap_get_server_name_for_url(r), port);
}

typedef struct {
    request_rec *r;
    tsgi_daemon *d;
    tsgi_conn *c;
    const char *id;
    apr_time_t deadline;
    int phase;
    apr_off_t declared;  /* Content-Length from the worker, -1 if none */
    apr_off_t relayed;   /* body bytes received from the worker */
} tsgi_call;

/* The client left before the response: nothing can be sent any more. 499
 * (nginx's "client closed request") only shows in the access log. */
static int client_gone(tsgi_call *k)
{
    ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, k->r, "mod_tsgi: request %s: client went away; worker told to abort",
                  k->id);
    conn_abort(k->c, TSGI_ABORT_CLIENT_GONE);
    k->c = NULL;
    k->r->connection->aborted = 1;
    k->r->status = 499;
    return DONE;
}

/* request-timeout counts from now: the worker has that long to make
 * progress (take the next body chunk, answer, send the next frame), so a
 * slow upload or a long stream is not cut while it moves. */
static void arm(tsgi_call *k)
{
    k->deadline = k->d->request_timeout ? apr_time_now() + k->d->request_timeout : 0;
}

/* Builds and sends REQUEST. */
static apr_status_t send_head(tsgi_call *k, int flags, apr_uint64_t content_length)
{
    request_rec *r = k->r;
    const apr_array_header_t *arr = apr_table_elts(r->headers_in);
    const apr_table_entry_t *e = (const apr_table_entry_t *)arr->elts;
    tsgi_header *h = apr_palloc(r->pool, sizeof(*h) * (arr->nelts ? arr->nelts : 1));
    tsgi_request q;
    unsigned char *buf;
    size_t size;
    int i, n = 0;
    memset(&q, 0, sizeof(q));
    for (i = 0; i < arr->nelts && n < TSGI_MAX_HEADERS; i++) {
        if (!e[i].key)
            continue;
        h[n].name = S(e[i].key);
        h[n].value = S(e[i].val);
        n++;
    }
    q.phase = (uint8_t)k->phase;
    q.flags = (uint8_t)flags;
    if (ap_ssl_conn_is_ssl(r->connection) || !strcasecmp(ap_http_scheme(r), "https"))
        q.flags |= TSGI_RF_TLS;
    q.client_port = r->useragent_addr ? r->useragent_addr->port : 0;
    q.server_port = r->connection->local_addr ? r->connection->local_addr->port : 0;
    q.content_length = content_length;
    q.start_us = (uint64_t)r->request_time;
    q.method = S(r->method);
    q.uri = S(r->unparsed_uri);
    q.protocol = S(r->protocol);
    q.scheme = S(ap_http_scheme(r));
    q.host = S(request_host(r));
    q.client_ip = S(r->useragent_ip);
    q.server_ip = S(r->connection->local_ip);
    q.user = S(r->user);
    q.id = S(k->id);
    q.base_path = S(((tsgi_dir_conf *)ap_get_module_config(r->per_dir_config, &tsgi_module))->base_path);
    q.headers = h;
    q.nheaders = (uint16_t)n;
    if (k->phase == TSGI_PHASE_LOG) {
        apr_time_t dur = apr_time_now() - r->request_time;
        q.log_status = (uint16_t)r->status;
        q.log_bytes = (uint64_t)(r->bytes_sent > 0 ? r->bytes_sent : 0);
        q.log_duration_us = (uint64_t)(dur > 0 ? dur : 0);
    }
    size = tsgi_request_size(&q);
    if (!size)
        return APR_ENOSPC;
    buf = apr_palloc(r->pool, size);
    tsgi_encode_request(buf, &q);
    return conn_write(k->c, buf, size, k->deadline);
}

/* Streams the client's body as BODY frames, then END. Returns an HTTP
 * status on failure (413, 400...), OK when all was sent. */
static int send_body(tsgi_call *k, apr_status_t *io)
{
    request_rec *r = k->r;
    apr_bucket_brigade *bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    apr_off_t total = 0;
    int seen_eos = 0;
    unsigned char end[TSGI_HDR_LEN];
    *io = APR_SUCCESS;
    while (!seen_eos) {
        apr_bucket *b;
        apr_status_t rv = ap_get_brigade(r->input_filters, bb, AP_MODE_READBYTES, APR_BLOCK_READ, TSGI_READ_BUF);
        if (rv != APR_SUCCESS) {
            ap_log_rerror(APLOG_MARK, APLOG_INFO, rv, r, "mod_tsgi: request %s: reading the request body failed",
                          k->id);
            return ap_map_http_request_error(rv, HTTP_BAD_REQUEST);
        }
        for (b = APR_BRIGADE_FIRST(bb); b != APR_BRIGADE_SENTINEL(bb); b = APR_BUCKET_NEXT(b)) {
            const char *data;
            apr_size_t len;
            unsigned char hdr[TSGI_HDR_LEN];
            struct iovec iov[2];
            if (APR_BUCKET_IS_EOS(b)) {
                seen_eos = 1;
                break;
            }
            if (APR_BUCKET_IS_METADATA(b))
                continue;
            if ((rv = apr_bucket_read(b, &data, &len, APR_BLOCK_READ)) != APR_SUCCESS)
                return ap_map_http_request_error(rv, HTTP_BAD_REQUEST);
            if (!len)
                continue;
            total += len;
            if (k->d->max_body && total > k->d->max_body) {
                ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r,
                              "mod_tsgi: request %s: body exceeds max-body (%" APR_OFF_T_FMT " bytes)", k->id,
                              k->d->max_body);
                return HTTP_REQUEST_ENTITY_TOO_LARGE;
            }
            tsgi_encode_body_header(hdr, len, 0);
            arm(k);
            iov[0].iov_base = hdr;
            iov[0].iov_len = TSGI_HDR_LEN;
            iov[1].iov_base = (void *)data;
            iov[1].iov_len = len;
            if ((*io = conn_writev(k->c, iov, 2, k->deadline)) != APR_SUCCESS)
                return HTTP_BAD_GATEWAY;
        }
        apr_brigade_cleanup(bb);
    }
    apr_brigade_destroy(bb);
    tsgi_encode_empty(end, TSGI_END);
    arm(k);
    if ((*io = conn_write(k->c, end, sizeof(end), k->deadline)) != APR_SUCCESS)
        return HTTP_BAD_GATEWAY;
    return OK;
}

/* No byte that could end a header or status line. */
static int field_ok(const tsgi_str *v)
{
    size_t i;
    for (i = 0; i < v->len; i++) {
        unsigned char ch = (unsigned char)v->p[i];
        if (ch == '\r' || ch == '\n' || ch == '\0')
            return 0;
    }
    return 1;
}

/* Header name must be a token, value free of CR/LF/NUL: nothing the
 * worker sends may split or smuggle a response line. Which headers a handler
 * may send at all (no hop-by-hop names) is the worker's rule, core's
 * isHopByHop; the worker is authenticated by the per-start secret. */
static int header_ok(const tsgi_header *h)
{
    size_t i;
    if (!h->name.len)
        return 0;
    for (i = 0; i < h->name.len; i++) {
        unsigned char ch = (unsigned char)h->name.p[i];
        if (ch <= 32 || ch >= 127 || strchr("()<>@,;:\\\"/[]?={}", ch))
            return 0;
    }
    return field_ok(&h->value);
}

/* Applies RESPONSE_HEAD to r. Returns 0 when the head is unusable. */
static int apply_head(tsgi_call *k, const tsgi_response_head *rh)
{
    request_rec *r = k->r;
    tsgi_hiter it;
    tsgi_header h;
    if (rh->status < 200 || rh->status > 999) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "mod_tsgi: request %s: worker sent status %u", k->id,
                      rh->status);
        return 0;
    }
    if (!field_ok(&rh->reason)) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "mod_tsgi: request %s: worker sent an invalid reason phrase", k->id);
        return 0;
    }
    tsgi_headers_begin(&rh->hblock, &it);
    while (tsgi_headers_next(&it, &h)) {
        const char *name, *val;
        if (!header_ok(&h)) {
            ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "mod_tsgi: request %s: worker sent an invalid header",
                          k->id);
            return 0;
        }
        name = apr_pstrmemdup(r->pool, h.name.p, h.name.len);
        val = apr_pstrmemdup(r->pool, h.value.p, h.value.len);
        if (!strcasecmp(name, "Content-Type")) {
            ap_set_content_type(r, val);
        } else if (!strcasecmp(name, "Content-Length")) {
            apr_off_t len;
            char *end;
            if (apr_strtoff(&len, val, &end, 10) != APR_SUCCESS || *end || len < 0) {
                ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "mod_tsgi: request %s: bad Content-Length from worker",
                              k->id);
                return 0;
            }
            ap_set_content_length(r, len);
            k->declared = len;
        } else {
            apr_table_addn(r->headers_out, name, val);
        }
    }
    r->status = rh->status;
    /* The handler's statusText (the worker checked it: HTAB, SP, VCHAR,
     * obs-text), else Apache's phrase. */
    if (rh->reason.len)
        r->status_line = apr_psprintf(r->pool, "%03u %.*s", rh->status, (int)rh->reason.len, rh->reason.p);
    else
        r->status_line = ap_get_status_line_ex(r->pool, rh->status);
    return 1;
}

/* Error page for a failed exchange; the status goes back to Apache. */
static int fail(tsgi_call *k, int status, apr_status_t rv, const char *what)
{
    ap_log_rerror(APLOG_MARK, APLOG_ERR, rv, k->r, "mod_tsgi: request %s: daemon %s: %s (%d)", k->id, k->d->name,
                  what, status);
    if (status == HTTP_SERVICE_UNAVAILABLE && !apr_table_get(k->r->err_headers_out, "Retry-After"))
        apr_table_setn(k->r->err_headers_out, "Retry-After", "1");
    return status;
}

/* The response after its head: BODY* END, streamed to the client. */
static int relay_body(tsgi_call *k)
{
    request_rec *r = k->r;
    conn_rec *cc = r->connection;
    apr_bucket_brigade *bb = apr_brigade_create(r->pool, cc->bucket_alloc);
    apr_size_t pending = 0;
    for (;;) {
        tsgi_in in;
        apr_status_t rv;
        int perr, flush = 0;
        arm(k);
        rv = read_frame(k->c, r->pool, k->deadline, &in, &perr);
        if (rv == APR_SUCCESS && in.f.type == TSGI_BODY) {
            k->relayed += in.f.len;
            if (in.f.flags & ~TSGI_BODY_FLUSH) {
                rv = APR_EGENERAL;
            } else if (k->declared >= 0 && k->relayed > k->declared) {
                /* More than the declared Content-Length would reach the next
                 * response on a keep-alive connection: never send it. */
                ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "mod_tsgi: request %s: worker sent more than its "
                              "Content-Length", k->id);
                rv = APR_EGENERAL;
            } else if (r->header_only || !in.f.len) {
                rv = conn_read(k->c, NULL, in.f.len, k->deadline);
                flush = (in.f.flags & TSGI_BODY_FLUSH) && !r->header_only;
            } else {
                char *data = apr_bucket_alloc(in.f.len, cc->bucket_alloc);
                rv = conn_read(k->c, (unsigned char *)data, in.f.len, k->deadline);
                if (rv == APR_SUCCESS) {
                    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_heap_create(data, in.f.len, apr_bucket_free,
                                                                       cc->bucket_alloc));
                    pending += in.f.len;
                    flush = in.f.flags & TSGI_BODY_FLUSH;
                } else {
                    apr_bucket_free(data);
                }
            }
        } else if (rv == APR_SUCCESS && in.f.type == TSGI_END && k->declared >= 0 && k->relayed != k->declared &&
                   !r->header_only && r->status != HTTP_NO_CONTENT && r->status != HTTP_NOT_MODIFIED) {
            ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "mod_tsgi: request %s: worker sent %" APR_OFF_T_FMT
                          " body bytes, Content-Length said %" APR_OFF_T_FMT, k->id, k->relayed, k->declared);
            rv = APR_EGENERAL;
        } else if (rv == APR_SUCCESS && in.f.type == TSGI_END) {
            APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_eos_create(cc->bucket_alloc));
            rv = ap_pass_brigade(r->output_filters, bb);
            conn_release(k->d, k->c, 1);
            k->c = NULL;
            if (rv != APR_SUCCESS || cc->aborted)
                ap_log_rerror(APLOG_MARK, APLOG_DEBUG, rv, r, "mod_tsgi: request %s: client went away", k->id);
            return OK;
        } else if (rv == APR_SUCCESS && in.f.type == TSGI_GOAWAY) {
            k->c->goaway = 1;
            continue;
        } else if (rv == APR_SUCCESS) {
            rv = APR_EGENERAL;
        }
        if (rv == TSGI_IO_CLIENT_GONE) {
            apr_brigade_cleanup(bb);
            client_gone(k);
            return OK;
        }
        if (rv != APR_SUCCESS) {
            /* Too late for an error status: cut the client connection so it
             * sees a truncated response, as mod_proxy does. */
            ap_log_rerror(APLOG_MARK, APLOG_ERR, rv, r, "mod_tsgi: request %s: daemon %s: %s while streaming the "
                          "response", k->id, k->d->name,
                          rv == TSGI_IO_TIMEOUT ? "request-timeout" : rv == TSGI_IO_EOF ? "worker closed the "
                          "connection" : "protocol or I/O error");
            conn_abort(k->c, rv == TSGI_IO_TIMEOUT ? TSGI_ABORT_TIMEOUT : TSGI_ABORT_ERROR);
            k->c = NULL;
            cc->keepalive = AP_CONN_CLOSE;
            APR_BRIGADE_INSERT_TAIL(bb, ap_bucket_error_create(HTTP_BAD_GATEWAY, NULL, r->pool, cc->bucket_alloc));
            APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_eos_create(cc->bucket_alloc));
            ap_pass_brigade(r->output_filters, bb);
            return OK;
        }
        if (flush || pending >= TSGI_READ_BUF || (k->c->start == k->c->end && pending)) {
            if (flush)
                APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_flush_create(cc->bucket_alloc));
            rv = ap_pass_brigade(r->output_filters, bb);
            apr_brigade_cleanup(bb);
            pending = 0;
            if (rv != APR_SUCCESS || cc->aborted) {
                ap_log_rerror(APLOG_MARK, APLOG_INFO, rv, r, "mod_tsgi: request %s: client went away", k->id);
                conn_abort(k->c, TSGI_ABORT_CLIENT_GONE);
                k->c = NULL;
                return OK;
            }
        }
    }
}

typedef enum { OUT_RESPONSE, OUT_DECISION, OUT_STATUS } tsgi_outcome;

static int has_lower(const char *s)
{
    for (; *s; s++)
        if (*s >= 'a' && *s <= 'z')
            return 1;
    return 0;
}

/*
 * One exchange: connect (or reuse), REQUEST [BODY* END], then read up to the
 * first reply frame. OUT_RESPONSE: the head is applied to r and the body
 * has been relayed; OUT_DECISION: *user set (NULL = no opinion);
 * OUT_STATUS: *status is the error to return.
 */
static tsgi_outcome exchange(request_rec *r, tsgi_daemon *d, int phase, int flags, int *status, const char **user)
{
    tsgi_call k;
    apr_status_t rv;
    apr_uint64_t clen = 0;
    int with_body = 0, retried = 0;
    const char *te = apr_table_get(r->headers_in, "Transfer-Encoding");
    const char *cl = apr_table_get(r->headers_in, "Content-Length");
    k.r = r;
    k.d = d;
    k.c = NULL;
    k.id = request_id(r);
    k.phase = phase;
    k.declared = -1;
    k.relayed = 0;
    *user = NULL;
    if (phase != TSGI_PHASE_LOG && has_lower(r->method)) {
        /* Methods are case-sensitive (RFC 9110 9.1); Node and nginx refuse these while parsing. */
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, "mod_tsgi: request %s: method '%s' has lower-case letters (400)",
                      k.id, r->method);
        *status = HTTP_BAD_REQUEST;
        return OUT_STATUS;
    }
    if (phase == TSGI_PHASE_FULL) {
        if (te) {
            with_body = 1;
            clen = TSGI_UNKNOWN_LENGTH;
        } else if (cl) {
            apr_off_t n;
            char *end;
            if (apr_strtoff(&n, cl, &end, 10) != APR_SUCCESS || *end || n < 0) {
                *status = HTTP_BAD_REQUEST;
                return OUT_STATUS;
            }
            if (d->max_body && n > d->max_body) {
                ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "mod_tsgi: request %s: Content-Length %" APR_OFF_T_FMT
                              " exceeds max-body", k.id, n);
                *status = HTTP_REQUEST_ENTITY_TOO_LARGE;
                return OUT_STATUS;
            }
            with_body = n > 0;
            clen = (apr_uint64_t)n;
        }
    }
    if (with_body)
        flags |= TSGI_RF_HAS_BODY;
again:
    rv = conn_acquire(d, r, &k.c);
    if (rv != APR_SUCCESS) {
        *status = fail(&k, HTTP_SERVICE_UNAVAILABLE, rv,
                       rv == TSGI_IO_TIMEOUT ? "no worker accepted within connect-timeout" : "cannot reach a worker");
        return OUT_STATUS;
    }
    arm(&k);
    if ((rv = send_head(&k, flags, clen)) != APR_SUCCESS) {
        int was_used = k.c->used;
        conn_close(k.c);
        k.c = NULL;
        /* A pooled connection the worker closed a moment ago: try a new one. */
        if (was_used && !retried && rv != APR_ENOSPC) {
            retried = 1;
            goto again;
        }
        *status = fail(&k, rv == APR_ENOSPC ? HTTP_REQUEST_HEADER_FIELDS_TOO_LARGE : HTTP_BAD_GATEWAY, rv,
                       "cannot send the request");
        return OUT_STATUS;
    }
    if (phase == TSGI_PHASE_LOG) {
        conn_release(d, k.c, 1);
        return OUT_DECISION;
    }
    if (with_body) {
        int st = send_body(&k, &rv);
        if (st != OK) {
            conn_abort(k.c, st == HTTP_REQUEST_ENTITY_TOO_LARGE ? TSGI_ABORT_TOO_LARGE
                            : rv != APR_SUCCESS ? TSGI_ABORT_ERROR : TSGI_ABORT_CLIENT_GONE);
            k.c = NULL;
            *status = st == HTTP_BAD_GATEWAY ? fail(&k, st, rv, "worker went away while receiving the body") : st;
            return OUT_STATUS;
        }
    }
    k.c->client_fd = client_socket_fd(r);
    for (;;) {
        tsgi_in in;
        int perr;
        rv = read_frame(k.c, r->pool, k.deadline, &in, &perr);
        if (rv == APR_SUCCESS && in.f.type == TSGI_GOAWAY) {
            k.c->goaway = 1;
            continue;
        }
        if (rv == TSGI_IO_CLIENT_GONE) {
            *status = client_gone(&k);
            return OUT_STATUS;
        }
        if (rv != APR_SUCCESS) {
            int was_goaway = k.c->goaway;
            if (rv == TSGI_IO_TIMEOUT) {
                conn_abort(k.c, TSGI_ABORT_TIMEOUT);
                k.c = NULL;
                *status = fail(&k, HTTP_GATEWAY_TIME_OUT, rv, "request-timeout");
                return OUT_STATUS;
            }
            conn_close(k.c);
            k.c = NULL;
            /* A worker closing with our request unread gives ECONNRESET on a
             * Unix socket rather than EOF: both mean the peer is gone. */
            if (rv == ECONNRESET || rv == EPIPE)
                rv = TSGI_IO_EOF;
            /* GOAWAY then EOF: the draining worker closed without reading our
             * request, so it never ran; safe to send it again. */
            if (rv == TSGI_IO_EOF && was_goaway && !with_body && !retried) {
                retried = 1;
                goto again;
            }
            *status = fail(&k, HTTP_BAD_GATEWAY, rv,
                           perr ? apr_pstrcat(r->pool, "protocol error: ", tsgi_strerror(perr), NULL)
                           : rv == TSGI_IO_EOF ? "worker closed the connection (crashed?)" : "I/O error");
            return OUT_STATUS;
        }
        switch (in.f.type) {
        case TSGI_RESPONSE_HEAD:
            if (!apply_head(&k, &in.m.u.response)) {
                conn_abort(k.c, TSGI_ABORT_ERROR);
                *status = HTTP_BAD_GATEWAY;
                return OUT_STATUS;
            }
            relay_body(&k);
            *status = OK;
            return OUT_RESPONSE;
        case TSGI_DECISION:
            if (phase != TSGI_PHASE_AUTHN && phase != TSGI_PHASE_AUTHZ)
                break;
            if (in.m.u.decision.kind == 1)
                *user = apr_pstrmemdup(r->pool, in.m.u.decision.user.p, in.m.u.decision.user.len);
            conn_release(d, k.c, 1);
            return OUT_DECISION;
        case TSGI_ERROR: {
            int st = in.m.u.error.status;
            if (st < 400 || st > 599)
                st = HTTP_BAD_GATEWAY;
            if (in.m.u.error.retry_after)
                apr_table_setn(r->err_headers_out, "Retry-After",
                               apr_psprintf(r->pool, "%u", in.m.u.error.retry_after));
            conn_release(d, k.c, 1);
            k.c = NULL;
            *status = fail(&k, st, 0, apr_psprintf(r->pool, "worker refused the request: %.*s",
                                                   (int)in.m.u.error.message.len, in.m.u.error.message.p));
            return OUT_STATUS;
        }
        default:
            break;
        }
        conn_abort(k.c, TSGI_ABORT_ERROR);
        *status = fail(&k, HTTP_BAD_GATEWAY, 0,
                       apr_psprintf(r->pool, "unexpected frame type 0x%02x from worker", in.f.type));
        return OUT_STATUS;
    }
}

/*
 * While a thread waits for its worker it runs as SCHED_BATCH: a batch
 * thread woken by the worker's reply does not preempt the worker, so the
 * worker answers everything it has read before the waiting threads run (one
 * context switch per reply instead of two). Only the exchange is affected:
 * the thread's policy is restored before it serves anything else.
 */
static int batch_enter(tsgi_daemon *d)
{
    struct sched_param sp = { 0 };
    return !d->cpool->batch && sched_getscheduler(0) == SCHED_OTHER && sched_setscheduler(0, SCHED_BATCH, &sp) == 0;
}

static void batch_leave(int entered)
{
    struct sched_param sp = { 0 };
    if (entered)
        sched_setscheduler(0, SCHED_OTHER, &sp);
}

static tsgi_outcome exchange_batched(request_rec *r, tsgi_daemon *d, int phase, int flags, int *status,
                                     const char **user)
{
    int entered = batch_enter(d);
    tsgi_outcome out = exchange(r, d, phase, flags, status, user);
    batch_leave(entered);
    return out;
}

/* ================================================================ hooks */

/* SetHandler tsgi with TsgiDaemonName in a <Location>: no file lies behind
 * the URL, so skip core's directory and file walk (5 stat calls per request)
 * and the later map_to_storage hooks, as mod_proxy does for its URLs. */
static int tsgi_map_to_storage(request_rec *r)
{
    tsgi_dir_conf *dc;
    core_dir_config *cd;
    const char *handler, *err = NULL;
    if (r->proxyreq || ap_location_walk(r) != OK)
        return DECLINED;
    dc = ap_get_module_config(r->per_dir_config, &tsgi_module);
    if (!dc || !dc->content || !dc->in_location)
        return DECLINED;
    /* Only where SetHandler tsgi applies: a nested <Location> may hand the
     * URL back to files (SetHandler none with an Alias). */
    cd = ap_get_core_module_config(r->per_dir_config);
    if (!cd->expr_handler)
        return DECLINED;
    handler = ap_expr_str_exec(r, cd->expr_handler, &err);
    return !err && handler && !strcasecmp(handler, TSGI_HANDLER_NAME) ? OK : DECLINED;
}

static int tsgi_handler(request_rec *r)
{
    tsgi_dir_conf *dc;
    int status, flags = 0;
    const char *user;
    if (!r->handler || strcmp(r->handler, TSGI_HANDLER_NAME))
        return DECLINED;
    dc = ap_get_module_config(r->per_dir_config, &tsgi_module);
    if (!dc->content) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "mod_tsgi: SetHandler tsgi without TsgiDaemonName for %s", r->uri);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (apr_table_get(r->notes, "tsgi-authn"))
        flags |= TSGI_RF_AUTHN_DONE;
    if (apr_table_get(r->notes, "tsgi-authz"))
        flags |= TSGI_RF_AUTHZ_DONE;
    /* The worker runs log for this request; TsgiLog must not repeat it. */
    apr_table_setn(r->notes, "tsgi-logged", "1");
    if (exchange_batched(r, dc->content, TSGI_PHASE_FULL, flags, &status, &user) == OUT_RESPONSE)
        return OK;
    apr_table_unset(r->notes, "tsgi-logged");
    return status;
}

/* Runs an access phase; OUT_RESPONSE means the rejecting response was sent. */
static int access_phase(request_rec *r, tsgi_daemon *d, int phase, const char **user)
{
    int status, flags = apr_table_get(r->notes, "tsgi-authn") ? TSGI_RF_AUTHN_DONE : 0;
    switch (exchange_batched(r, d, phase, flags, &status, user)) {
    case OUT_RESPONSE:
        /* The hook's Response went out as is; DONE ends the request there. */
        return DONE;
    case OUT_DECISION:
        return OK;
    default:
        return status;
    }
}

static int tsgi_check_authn(request_rec *r)
{
    tsgi_dir_conf *dc = ap_get_module_config(r->per_dir_config, &tsgi_module);
    const char *user = NULL, *type;
    int rc;
    if (!dc->authn)
        return DECLINED;
    rc = access_phase(r, dc->authn, TSGI_PHASE_AUTHN, &user);
    if (rc != OK)
        return rc;
    if (!user) {
        /* No opinion: let other authn modules try; with "AuthType tsgi"
         * nobody else will, so that is a plain 401. */
        type = ap_auth_type(r);
        return type && !strcasecmp(type, "tsgi") ? HTTP_UNAUTHORIZED : DECLINED;
    }
    r->user = (char *)user;
    if (!r->ap_auth_type)
        r->ap_auth_type = "tsgi";
    apr_table_setn(r->notes, "tsgi-authn", "1");
    return OK;
}

static int tsgi_check_authz(request_rec *r)
{
    tsgi_dir_conf *dc = ap_get_module_config(r->per_dir_config, &tsgi_module);
    const char *user = NULL;
    int rc;
    if (!dc->authz)
        return DECLINED;
    rc = access_phase(r, dc->authz, TSGI_PHASE_AUTHZ, &user);
    if (rc != OK)
        return rc;
    apr_table_setn(r->notes, "tsgi-authz", "1");
    /* Allowed: Apache's own Require rules still get their say. */
    return DECLINED;
}

static int tsgi_log_transaction(request_rec *r)
{
    tsgi_dir_conf *dc = ap_get_module_config(r->per_dir_config, &tsgi_module);
    const char *user;
    int status;
    if (!dc->log || apr_table_get(r->notes, "tsgi-logged"))
        return DECLINED;
    /* Fire and forget: the worker sends nothing back for LOG. */
    exchange(r, dc->log, TSGI_PHASE_LOG, 0, &status, &user);
    return DECLINED;
}

static void tsgi_register_hooks(apr_pool_t *p)
{
    ap_hook_post_config(tsgi_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(tsgi_child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(tsgi_handler, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_map_to_storage(tsgi_map_to_storage, NULL, NULL, APR_HOOK_FIRST);
    ap_hook_check_authn(tsgi_check_authn, NULL, NULL, APR_HOOK_FIRST, AP_AUTH_INTERNAL_PER_CONF);
    ap_hook_check_authz(tsgi_check_authz, NULL, NULL, APR_HOOK_FIRST, AP_AUTH_INTERNAL_PER_CONF);
    ap_hook_log_transaction(tsgi_log_transaction, NULL, NULL, APR_HOOK_MIDDLE);
}

AP_DECLARE_MODULE(tsgi) = {
    STANDARD20_MODULE_STUFF,
    create_dir_conf,
    merge_dir_conf,
    NULL,
    NULL,
    tsgi_cmds,
    tsgi_register_hooks,
    0
};
