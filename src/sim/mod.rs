//! Stateful GitLab REST v4 simulator (placeholder; being written in a worktree).
