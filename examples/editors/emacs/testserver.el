;;; testserver.el --- Run Python tests on a warm testserver -*- lexical-binding: t; -*-

;; Version: 0.1
;; Package-Requires: ((emacs "27.1"))
;; Keywords: tools, processes, languages

;;; Commentary:

;; `testserver-mode' is a minor mode for Python buffers.  It keeps one
;; `testserver bridge' process per project: a warm test server that has
;; imported the tests once and reloads changed modules before each run, so
;; running a test takes milliseconds instead of a fresh interpreter.  The
;; bridge speaks JSON lines (spec/json-output.md, section 6).
;;
;;   C-c , t   run the test at point (method, class, or the whole module)
;;   C-c , f   run the tests of this file
;;   C-c , a   run every test of the project
;;   C-c , l   run the last selection again
;;   C-c , k   cancel the running test
;;   C-c , d   debug the test at point in a comint buffer (`testserver debug')
;;   C-c , s   toggle running the file's tests on save
;;   C-c , r   reload changed modules now
;;   C-c , b   show the results buffer
;;   C-c , q   stop the project's bridge
;;
;; Results go to the *testserver* buffer, a `compilation-mode' buffer: the
;; "FAIL id (file:line)" lines and the File "...", line N lines of tracebacks
;; are links, and `next-error' (M-g n) walks through them.
;;
;; pdb works: when a test stops at `breakpoint()' (or calls `input()'), the
;; output so far is shown in *testserver* and the minibuffer asks for a
;; line, which is sent to the test.  Type pdb commands (p x, n, s, c); C-g
;; cancels the test.
;;
;; Setup:
;;
;;   (add-to-list 'load-path "/path/to/testserver/examples/editors/emacs")
;;   (require 'testserver)
;;   (add-hook 'python-mode-hook #'testserver-mode)
;;
;; `testserver-command' (or the environment variable TESTSERVER_COMMAND)
;; says how to start testserver, e.g. ("/project/.venv/bin/python" "-m"
;; "testserver"); the default is the `testserver' script on the PATH.

;;; Code:

(require 'compile)
(require 'json)
(require 'python)
(require 'seq)
(require 'subr-x)

(defgroup testserver nil
  "Run Python tests on a warm testserver."
  :group 'tools
  :prefix "testserver-")

(defcustom testserver-command nil
  "The command that runs testserver, as a list of strings.
nil means the environment variable TESTSERVER_COMMAND, split the
way a shell would (double quotes group words), or else
\(\"testserver\")."
  :type '(choice (const :tag "$TESTSERVER_COMMAND, else testserver" nil)
                 (repeat string)))

(defcustom testserver-project-root nil
  "The project's root directory, the top-level directory of its tests.
nil means the nearest directory above the file that contains one
of `testserver-root-markers'."
  :type '(choice (const :tag "Found from the markers" nil) directory)
  :safe #'stringp)

(defcustom testserver-root-markers '(".git" "pyproject.toml" "setup.py" "setup.cfg")
  "Files or directories whose presence marks a project root."
  :type '(repeat string))

(defcustom testserver-start-directory "."
  "Where discovery starts, relative to the project root (the -s argument)."
  :type 'string
  :safe #'stringp)

(defcustom testserver-server-args nil
  "Arguments of `testserver bridge', e.g. (\"-t\" \".\" \"-s\" \"tests\").
nil means -t . -s `testserver-start-directory'."
  :type '(repeat string)
  :safe (lambda (value) (and (listp value) (seq-every-p #'stringp value))))

(defcustom testserver-run-on-save t
  "Non-nil means saving a buffer in `testserver-mode' runs tests.
A test file (see `testserver-test-file-regexp') runs its own tests;
another file runs the last selection again."
  :type 'boolean)

(defcustom testserver-test-file-regexp "\\`test.*\\.py\\'"
  "File names that hold tests (discovery's default pattern, test*.py)."
  :type 'regexp)

(defcustom testserver-read-input-function #'testserver-read-input
  "Function that reads a line for a test waiting for input.
It is called with the prompt (the test's unfinished last line of
output, e.g. \"(Pdb) \") and the test id, and returns the line
without its newline, or nil for end of input.  Quitting the
prompt cancels the test."
  :type 'function)

(defcustom testserver-results-buffer-name "*testserver*"
  "Name of the buffer that shows test results."
  :type 'string)

(defcustom testserver-keymap-prefix (kbd "C-c ,")
  "Prefix key of `testserver-mode' commands (set it before loading)."
  :type 'key-sequence)

(defvar testserver-after-run-hook nil
  "Functions called with the root and the summary event (an alist) after a run.")

(defvar testserver-last-summary nil
  "The summary event of the last run, an alist (see spec/json-output.md).")

(defface testserver-pass '((t :inherit success)) "Passing tests.")
(defface testserver-fail '((t :inherit error)) "Failing tests.")
(defface testserver-input '((t :inherit minibuffer-prompt)) "Lines sent to a test.")

(defvar testserver--bridges (make-hash-table :test #'equal)
  "Project root -> its bridge process.")

(defvar testserver--last-selection (make-hash-table :test #'equal)
  "Project root -> the tests of its last run (nil: all).")

(defvar testserver--next-id 0)
(defvar testserver--input-history nil)
(defvar testserver--saving nil "Non-nil while a command saves a buffer itself.")
(defvar testserver--running nil "Non-nil between a run's start and its summary.")
(defvar testserver--preamble nil
  "Notes shown since the last run ended (a reload, a message), newest first.
A run's start clears the buffer and shows them again under its header.")

;;;; The bridge process

(defun testserver--command ()
  "Return the command that runs testserver (see `testserver-command')."
  (or testserver-command
      (let ((env (getenv "TESTSERVER_COMMAND")))
        (and env (not (string-empty-p env)) (split-string-and-unquote env)))
      '("testserver")))

(defun testserver--server-args ()
  "Return the arguments of `testserver bridge'."
  (or testserver-server-args (list "-t" "." "-s" testserver-start-directory)))

(defun testserver-project-root (&optional file)
  "The project root of FILE (default: this buffer's file) as a directory name."
  (let ((start (file-name-directory (expand-file-name (or file buffer-file-name
                                                          default-directory)))))
    (file-name-as-directory
     (file-truename
      (or testserver-project-root
          (locate-dominating-file
           start (lambda (dir)
                   (seq-some (lambda (marker) (file-exists-p (expand-file-name marker dir)))
                             testserver-root-markers)))
          (user-error "No project root above %s (see `testserver-root-markers')" start))))))

(defun testserver--bridge (root)
  "The live bridge process of ROOT, started if needed."
  (let ((process (gethash root testserver--bridges)))
    (if (process-live-p process)
        process
      (let* ((default-directory root)
             (command (append (testserver--command) '("bridge") (testserver--server-args)))
             (process (make-process
                       :name "testserver-bridge"
                       :command command
                       :connection-type 'pipe
                       :coding 'utf-8-unix
                       :noquery t
                       :stderr (get-buffer-create " *testserver-stderr*")
                       :filter #'testserver--filter
                       :sentinel #'testserver--sentinel)))
        (process-put process 'testserver-root root)
        (process-put process 'testserver-partial "")
        (process-put process 'testserver-state 'loading)
        (puthash root process testserver--bridges)
        (message "testserver: loading the tests of %s..." root)
        process))))

(defun testserver-bridge-state (&optional root)
  "The state of ROOT's bridge: `loading', `ready' or nil (no bridge running)."
  (let ((process (gethash (or root (testserver--root)) testserver--bridges)))
    (and (process-live-p process) (process-get process 'testserver-state))))

(defun testserver--send (process command)
  "Send COMMAND, an alist, to PROCESS as one JSON line."
  (process-send-string process (concat (json-encode command) "\n")))

(defun testserver--new-id ()
  "Return a fresh command id."
  (format "emacs-%d" (setq testserver--next-id (1+ testserver--next-id))))

(defun testserver--filter (process text)
  "Split TEXT from PROCESS into lines and handle each JSON event."
  (let ((data (concat (process-get process 'testserver-partial) text))
        (start 0))
    (while (string-match "\n" data start)
      (let ((line (substring data start (match-beginning 0))))
        (setq start (match-end 0))
        (unless (string-empty-p line)
          (condition-case err
              (testserver--handle process (testserver--parse line))
            (error (testserver--insert (format "testserver.el: %s on %s\n"
                                               (error-message-string err) line)))))))
    (process-put process 'testserver-partial (substring data start))))

(defun testserver--parse (line)
  "The JSON object on LINE as an alist with symbol keys; null and false are nil."
  (if (and (fboundp 'json-parse-string)
           (or (not (fboundp 'json-available-p)) (json-available-p)))
      (json-parse-string line :object-type 'alist :null-object nil :false-object nil)
    (let ((json-object-type 'alist) (json-array-type 'vector)
          (json-key-type 'symbol) (json-null nil) (json-false nil))
      (json-read-from-string line))))

(defun testserver--sentinel (process event)
  "Say that the bridge PROCESS ended (EVENT says how) and forget it."
  (let ((root (process-get process 'testserver-root)))
    (when (eq (gethash root testserver--bridges) process)
      (remhash root testserver--bridges))
    (unless (process-live-p process)
      (testserver--insert (format "testserver bridge for %s: %s" root event))
      (unless (zerop (process-exit-status process))
        (testserver--insert "(its diagnostics are in the buffer \" *testserver-stderr*\")\n")))))

;;;; The results buffer

(define-derived-mode testserver-results-mode compilation-mode "Testserver"
  "Results of testserver runs.
FAIL lines and traceback lines are links; \\[next-error] visits the next one."
  (setq-local compilation-error-regexp-alist '(testserver-failure python-tracebacks-and-caml))
  (setq-local compilation-disable-input t))

(add-to-list 'compilation-error-regexp-alist-alist
             '(testserver-failure
               "^\\(?:FAIL\\|ERROR\\|UNEXPECTED SUCCESS\\) [^\n]* (\\([^()\n]+\\):\\([0-9]+\\))$"
               1 2))

(defun testserver--results-buffer ()
  "Return the results buffer, created if needed."
  (let ((buffer (get-buffer testserver-results-buffer-name)))
    (or buffer
        (with-current-buffer (get-buffer-create testserver-results-buffer-name)
          (testserver-results-mode)
          (current-buffer)))))

(defun testserver--insert (text &optional face)
  "Append TEXT (with FACE) to the results buffer and keep its windows at the end."
  (with-current-buffer (testserver--results-buffer)
    (let ((inhibit-read-only t)
          (follow (= (point) (point-max))))
      (save-excursion
        (goto-char (point-max))
        (insert (if face (propertize text 'face face) text)))
      (when follow (goto-char (point-max)))
      (dolist (window (get-buffer-window-list (current-buffer) nil t))
        (set-window-point window (point-max))))))

(defun testserver-show-results ()
  "Show the results buffer."
  (interactive)
  (display-buffer (testserver--results-buffer)))

;;;; Events

(defun testserver--handle (process event)
  "Show EVENT, a JSON event of the bridge PROCESS."
  (let-alist event
    (pcase .event
      ("ready" (testserver--on-ready process event))
      ("start" (testserver--on-start process event))
      ("test" (testserver--on-test process event))
      ("test-output" (testserver--insert .text))
      ("output" (testserver--insert .text))
      ("stdin-wanted"
       (run-at-time 0 nil #'testserver--answer process .test_id (or .prompt "")))
      ("reload" (testserver--note (testserver--reload-text event)))
      ("message" (testserver--note (format "testserver: %s\n" .text)))
      ("summary" (testserver--on-summary process event))
      ("complete"
       (when (equal .status "error")
         (testserver--insert (format "testserver: %s failed: %s\n" .command
                                     (or .message .code)) 'testserver-fail)))
      ("error" (testserver--insert (format "testserver: %s\n" .message) 'testserver-fail)))))

(defun testserver--on-ready (process event)
  "Note that the bridge PROCESS has loaded its tests (EVENT), and any load errors."
  (process-put process 'testserver-state 'ready)
  (let-alist event
    (dolist (failure (append .load_errors nil))
      (let-alist failure
        (testserver--note (propertize (format "testserver: cannot import %s: %s\n"
                                              .module .message)
                                      'face 'testserver-fail))))
    (message "testserver: ready, %s tests%s" .tests
             (if (> (length .load_errors) 0)
                 (format ", %d failed to import" (length .load_errors))
               ""))))

(defun testserver--on-start (process event)
  "Clear the results buffer for the run of PROCESS that EVENT starts."
  (let ((root (process-get process 'testserver-root)))
    (with-current-buffer (testserver--results-buffer)
      (let ((inhibit-read-only t))
        (erase-buffer))
      (compilation-forget-errors)
      (setq default-directory root))
    (testserver--insert (format "-*- testserver run %s: %s test%s in %s -*-\n"
                                (alist-get 'run event) (alist-get 'tests event)
                                (if (eql (alist-get 'tests event) 1) "" "s") root))
    (testserver--insert (apply #'concat (reverse testserver--preamble)))
    (setq testserver--preamble nil
          testserver--running t)
    (testserver-show-results)))

(defun testserver--on-test (process event)
  "Show the result of a test (EVENT) of PROCESS; a failure with a link."
  (let-alist event
    (unless (member .status '("inprogress" "exists"))
      (let ((problem (member .status '("fail" "uxsuccess")))
            (where (and .file .line
                        (format " (%s:%d)" (file-relative-name
                                            .file (process-get process 'testserver-root))
                                .line))))
        (when (or problem (not (equal .kind "subtest")))
          (testserver--insert
           (format "%s %s%s\n"
                   (pcase .status
                     ("success" "ok  ") ("skip" "skip") ("xfail" "xfail")
                     ("uxsuccess" "UNEXPECTED SUCCESS")
                     (_ (if (equal .kind "fixture") "ERROR" "FAIL")))
                   .test_id (if problem (or where "") ""))
           (if problem 'testserver-fail 'testserver-pass)))
        (dolist (name '(traceback reason))
          (let ((text (alist-get name .attachments)))
            (when (and text (or problem (eq name 'reason)))
              (testserver--insert (if (string-suffix-p "\n" text) text (concat text "\n"))))))))))

(defun testserver--note (text)
  "Insert TEXT; between runs, also keep it for the next run's header."
  (unless testserver--running
    (push text testserver--preamble))
  (testserver--insert text))

(defun testserver--reload-text (event)
  "Return the line that describes the reload EVENT."
  (let-alist event
    (if .restarted
        (format "testserver: server restarted (%s)\n" .reason)
      (format "testserver: reloaded %s\n" (string-join (append .reloaded nil) ", ")))))

(defun testserver--on-summary (process event)
  "Show the summary EVENT of a run of PROCESS and run `testserver-after-run-hook'."
  (let-alist event
    (let ((verdict (cond (.ok "OK")
                         ((equal .status "cancelled") "CANCELLED")
                         (t "FAILED"))))
      (testserver--insert (format "\n%s\n%s\n" .text verdict)
                          (if .ok 'testserver-pass 'testserver-fail))
      (setq testserver-last-summary event
            testserver--running nil)
      (message "testserver: %s %s" .text verdict)
      (run-hook-with-args 'testserver-after-run-hook
                          (process-get process 'testserver-root) event))))

;;;; Input for tests (pdb)

(defun testserver-read-input (prompt test-id)
  "Read a line for TEST-ID in the minibuffer, showing PROMPT."
  (read-string (if (string-empty-p prompt) (format "Input for %s: " test-id) prompt)
               nil 'testserver--input-history))

(defun testserver--answer (process test-id prompt)
  "Ask for the line TEST-ID waits for and send it to PROCESS.
PROMPT is what the test printed last.  Quitting cancels the test."
  (when (process-live-p process)
    (testserver-show-results)
    (let ((answer (condition-case nil
                      (let ((inhibit-quit nil))
                        (funcall testserver-read-input-function prompt test-id))
                    (quit 'quit))))
      (cond ((eq answer 'quit)
             (testserver--send process '((command . "cancel")))
             (testserver--insert "^G (cancelled)\n" 'testserver-input))
            ((null answer)
             (testserver--send process '((command . "stdin") (data . "")))
             (testserver--insert "^D\n" 'testserver-input))
            (t
             (testserver--send process `((command . "stdin") (data . ,(concat answer "\n"))))
             (testserver--insert (concat answer "\n") 'testserver-input))))))

;;;; Test ids

(defun testserver-module-id (&optional file)
  "The dotted module name of FILE (default: this buffer's), from the project root."
  (let* ((file (file-truename (or file buffer-file-name (user-error "Not visiting a file"))))
         (root (testserver-project-root file))
         (relative (file-relative-name (file-name-sans-extension file) root))
         (parts (split-string relative "/")))
    (when (string-prefix-p ".." relative)
      (user-error "%s is not below the project root %s" file root))
    (when (equal (car (last parts)) "__init__")
      (setq parts (butlast parts)))
    (string-join parts ".")))

(defun testserver--class-p (name)
  "Return non-nil if this buffer defines a class called NAME."
  (save-excursion
    (goto-char (point-min))
    (let ((case-fold-search nil))
      (re-search-forward (concat "^[ \t]*class[ \t]+" (regexp-quote name) "\\_>") nil t))))

(defun testserver--defun-id ()
  "The dotted Class[.method] around point that names a test, or nil.
Classes (nested ones too) are kept, then one method; a function
outside any class names no test."
  (let ((names (let ((defun (save-excursion (python-info-current-defun))))
                 (and defun (split-string defun "\\."))))
        (kept nil))
    (while (and names (testserver--class-p (car names)))
      (push (pop names) kept))
    (when (and kept names)
      (push (car names) kept))
    (and kept (string-join (nreverse kept) "."))))

(defun testserver-test-id-at-point ()
  "The id of the test at point: a method, a class, or the module."
  (let ((module (testserver-module-id))
        (defun (testserver--defun-id)))
    (if defun (concat module "." defun) module)))

;;;; Commands

(defun testserver--save ()
  "Save this buffer if it is modified, without running tests on save."
  (when (and buffer-file-name (buffer-modified-p))
    (let ((testserver--saving t))
      (save-buffer))))

(defun testserver-run (tests &optional root)
  "Start running TESTS in ROOT's bridge.
TESTS are ids, dotted prefixes or patterns; nil means all tests.
Return the command id."
  (let* ((root (or root (testserver-project-root)))
         (id (testserver--new-id)))
    (puthash root tests testserver--last-selection)
    (testserver--send (testserver--bridge root)
                      `((id . ,id) (command . "run") (tests . ,(vconcat tests))))
    id))

(defun testserver-run-test-at-point ()
  "Run the test method, class or module at point."
  (interactive)
  (testserver--save)
  (testserver-run (list (testserver-test-id-at-point))))

(defun testserver-run-file ()
  "Run the tests of this file."
  (interactive)
  (testserver--save)
  (testserver-run (list (testserver-module-id))))

(defun testserver-run-all ()
  "Run every test of the project."
  (interactive)
  (testserver--save)
  (testserver-run nil))

(defun testserver-rerun ()
  "Run the last selection of this project again."
  (interactive)
  (let ((root (testserver-project-root)))
    (testserver-run (gethash root testserver--last-selection) root)))

(defun testserver--command-to-bridge (command)
  "Send COMMAND (a string) to this project's bridge, if it is running."
  (let ((process (gethash (testserver-project-root) testserver--bridges)))
    (if (process-live-p process)
        (testserver--send process `((id . ,(testserver--new-id)) (command . ,command)))
      (message "testserver: no bridge is running for this project"))))

(defun testserver-cancel ()
  "Cancel the running test."
  (interactive)
  (testserver--command-to-bridge "cancel"))

(defun testserver-reload ()
  "Reload changed modules now."
  (interactive)
  (testserver--command-to-bridge "reload"))

(defun testserver-stop ()
  "Stop this project's bridge and its server."
  (interactive)
  (testserver--command-to-bridge "quit"))

(defun testserver-toggle-run-on-save ()
  "Toggle running tests on save in this buffer."
  (interactive)
  (setq-local testserver-run-on-save (not testserver-run-on-save))
  (message "testserver: run on save %s" (if testserver-run-on-save "on" "off")))

(defun testserver-debug-test-at-point ()
  "Debug the test at point with `testserver debug' in a comint buffer.
pdb's prompts and your input then go through that buffer."
  (interactive)
  (testserver--save)
  (let* ((test-id (testserver-test-id-at-point))
         (default-directory (testserver-project-root))
         (command (testserver--command))
         (buffer (get-buffer-create (format "*testserver-debug %s*" test-id))))
    (apply #'make-comint-in-buffer "testserver-debug" buffer (car command) nil
           (append (cdr command) (list "debug" test-id) (testserver--server-args)))
    (pop-to-buffer buffer)))

(defun testserver--after-save ()
  "Run this file's tests, or the last selection if it holds none."
  (when (and testserver-run-on-save (not testserver--saving))
    (if (string-match-p testserver-test-file-regexp
                        (file-name-nondirectory buffer-file-name))
        (testserver-run-file)
      (let ((root (testserver-project-root)))
        (when (gethash root testserver--bridges)
          (testserver-rerun))))))

;;;; The mode

(defvar testserver-command-map
  (let ((map (make-sparse-keymap)))
    (define-key map "t" #'testserver-run-test-at-point)
    (define-key map "f" #'testserver-run-file)
    (define-key map "a" #'testserver-run-all)
    (define-key map "l" #'testserver-rerun)
    (define-key map "k" #'testserver-cancel)
    (define-key map "d" #'testserver-debug-test-at-point)
    (define-key map "s" #'testserver-toggle-run-on-save)
    (define-key map "r" #'testserver-reload)
    (define-key map "b" #'testserver-show-results)
    (define-key map "q" #'testserver-stop)
    map)
  "Commands of `testserver-mode', under `testserver-keymap-prefix'.")

(defvar testserver-mode-map
  (let ((map (make-sparse-keymap)))
    (define-key map testserver-keymap-prefix testserver-command-map)
    map)
  "Keymap of `testserver-mode'.")

;;;###autoload
(define-minor-mode testserver-mode
  "Run this project's Python tests on a warm testserver.

\\{testserver-command-map}"
  :lighter " TS"
  :keymap testserver-mode-map
  (if testserver-mode
      (add-hook 'after-save-hook #'testserver--after-save nil t)
    (remove-hook 'after-save-hook #'testserver--after-save t)))

(provide 'testserver)
;;; testserver.el ends here
