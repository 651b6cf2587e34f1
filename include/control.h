/*
 * control: one thread with its own event loop for the work that serves the
 * whole process rather than one client: the active health checks of
 * backends (health = { ... }) and the admin interface's Unix socket
 * (admin = { socket = ...; }). Both follow configuration reloads.
 */
#ifndef POSTERN_CONTROL_H
#define POSTERN_CONTROL_H

#include <stdio.h>

#include "config.h"

/* Opens the admin socket (when configured) and starts the thread. */
int control_start(const struct config *cfg, FILE *errs);
void control_stop(void);

/*
 * postern -a: send command to the admin socket of cfg and print the answer
 * on stdout. 0, 1 when the answer is an error, 2 when there is no answer.
 */
int control_client(const struct config *cfg, const char *command);

#endif
