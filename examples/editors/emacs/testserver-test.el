;;; testserver-test.el --- ERT tests of testserver.el -*- lexical-binding: t; -*-

;;; Commentary:

;; Run by tests/test_emacs.py against a temporary copy of
;; tests/projects/editor_demo:
;;
;;   TESTSERVER_TEST_PROJECT=/tmp/copy TESTSERVER_COMMAND='"/venv/bin/python" -m testserver' \
;;     emacs --batch -Q -l testserver.el -l testserver-test.el -f ert-run-tests-batch-and-exit
;;
;; The tests start real bridges (and servers) and wait for their events.

;;; Code:

(require 'ert)
(require 'testserver)

(defvar testserver-test-project (getenv "TESTSERVER_TEST_PROJECT")
  "The project copy the tests work in.")

(defconst testserver-test-timeout 60
  "Seconds to wait for an event before failing.")

(defun testserver-test--file (relative)
  (expand-file-name relative testserver-test-project))

(defun testserver-test--results ()
  "The text of the results buffer."
  (with-current-buffer testserver-results-buffer-name
    (buffer-substring-no-properties (point-min) (point-max))))

(defun testserver-test--wait-for (predicate what)
  "Process events until PREDICATE is true; fail after a while, naming WHAT."
  (let ((deadline (+ (float-time) testserver-test-timeout)))
    (while (and (not (funcall predicate)) (< (float-time) deadline))
      (accept-process-output nil 0.05))
    (unless (funcall predicate)
      (ert-fail (list "timed out waiting for" what
                      (and (get-buffer testserver-results-buffer-name)
                           (testserver-test--results)))))))

(defun testserver-test--run-and-wait (start)
  "Call START, which starts a run, and return the run's summary event."
  (let* ((summaries nil)
         (testserver-after-run-hook (list (lambda (_root summary) (push summary summaries)))))
    (funcall start)
    (testserver-test--wait-for (lambda () summaries) "a summary")
    (car summaries)))

(defun testserver-test--stop-all ()
  "Quit every bridge, check that each exited with status 0."
  (let ((processes (hash-table-values testserver--bridges)))
    (dolist (process processes)
      (testserver--send process '((command . "quit"))))
    (testserver-test--wait-for
     (lambda () (not (seq-some #'process-live-p processes))) "the bridges to exit")
    (dolist (process processes)
      (should (equal (list (process-status process) (process-exit-status process))
                     '(exit 0))))))

(defmacro testserver-test--in-file (relative &rest body)
  "Run BODY in a buffer visiting RELATIVE; then stop the bridges, kill the buffer."
  (declare (indent 1))
  `(let ((buffer (find-file-noselect (testserver-test--file ,relative))))
     (unwind-protect
         (with-current-buffer buffer ,@body)
       (testserver-test--stop-all)
       (with-current-buffer buffer (set-buffer-modified-p nil))
       (kill-buffer buffer))))

(defun testserver-test--goto (regexp)
  (goto-char (point-min))
  (re-search-forward regexp))

(ert-deftest testserver-test-ids-at-point ()
  (testserver-test--in-file "edemo/test_calc.py"
    (should (derived-mode-p 'python-mode))
    (should (equal (testserver-project-root)
                   (file-name-as-directory (file-truename testserver-test-project))))
    (should (equal (testserver-module-id) "edemo.test_calc"))
    (should (equal (testserver-module-id (testserver-test--file "edemo/__init__.py")) "edemo"))
    (dolist (case '(("^import unittest" . "edemo.test_calc")
                    ("^class Calc" . "edemo.test_calc.Calc")
                    ("def test_add" . "edemo.test_calc.Calc.test_add")
                    ("assertEqual(sub" . "edemo.test_calc.Calc.test_sub")
                    ("return \"not a test\"" . "edemo.test_calc")))
      (testserver-test--goto (car case))
      (should (equal (cons (car case) (testserver-test-id-at-point)) case)))))

(ert-deftest testserver-test-run-file-shows-results-with-links ()
  (testserver-test--in-file "edemo/test_calc.py"
    (let-alist (testserver-test--run-and-wait #'testserver-run-file)
      (should (equal (list .outcomes.success .outcomes.fail .ran .ok) '(2 1 3 nil))))
    (let ((text (testserver-test--results)))
      (should (string-match-p "^ok   edemo\\.test_calc\\.Calc\\.test_add$" text))
      (should (string-match-p
               "^FAIL edemo\\.test_calc\\.Calc\\.test_sub (edemo/test_calc\\.py:10)$" text))
      (should (string-match-p "^AssertionError: 2 != 3$" text))
      (should (string-match-p "^hello from test_prints$" text))
      (should (string-match-p "^Ran 3 tests in [0-9.]+s . 2 passed, 1 failed\nFAILED$" text)))
    (let ((calc (file-truename (testserver-test--file "edemo/test_calc.py"))))
      ;; The FAIL line is a link to the test's definition...
      (with-current-buffer testserver-results-buffer-name
        (goto-char (point-min))
        (compilation-next-error 1)
        (should (looking-at "FAIL edemo\\.test_calc\\.Calc\\.test_sub"))
        (compile-goto-error)
        (should (equal (list (file-truename buffer-file-name) (line-number-at-pos))
                       (list calc 10))))
      ;; ...and the traceback's File "...", line N to the failing line.
      (with-current-buffer testserver-results-buffer-name
        (compilation-next-error 1)
        (should (looking-at "  File \".*test_calc\\.py\", line 11"))
        (compile-goto-error)
        (should (equal (list (file-truename buffer-file-name) (line-number-at-pos))
                       (list calc 11)))))))

(ert-deftest testserver-test-saving-runs-the-file-on-the-same-warm-server ()
  (testserver-test--in-file "edemo/test_calc.py"
    (testserver-mode 1)
    (should (memq #'testserver--after-save after-save-hook))
    (testserver-test--goto "def test_add")
    (let-alist (testserver-test--run-and-wait #'testserver-run-test-at-point)
      (should (equal (list .ran .ok) '(1 t))))
    (let ((bridge (gethash (testserver-project-root) testserver--bridges))
          (original (buffer-string)))
      (testserver-test--goto "sub(5, 3), 3)")
      (replace-match "sub(5, 3), 2)" t t)
      (unwind-protect
          (let-alist (testserver-test--run-and-wait #'save-buffer)
            (should (equal (list .ran .outcomes.fail .ok) '(3 0 t)))
            (should (string-match-p "^testserver: reloaded .*edemo\\.test_calc"
                                    (testserver-test--results)))
            (should (eq (gethash (testserver-project-root) testserver--bridges) bridge)))
        (testserver-mode -1)
        (erase-buffer)
        (insert original)
        (save-buffer)))))

(ert-deftest testserver-test-pdb-through-the-minibuffer ()
  (let* ((answers (list "p secret" "c"))
         (prompts nil)
         (testserver-read-input-function
          (lambda (prompt test-id) (push (list prompt test-id) prompts) (pop answers))))
    (testserver-test--in-file "edemo/test_debug.py"
      (testserver-test--goto "breakpoint()")
      (let-alist (testserver-test--run-and-wait #'testserver-run-test-at-point)
        (should (equal (list .ran .ok) '(1 t))))
      (should (null answers))
      (should (equal (reverse prompts)
                     '(("(Pdb) " "edemo.test_debug.Debug.test_breakpoint")
                       ("(Pdb) " "edemo.test_debug.Debug.test_breakpoint"))))
      (should (string-match-p "-> self.assertEqual(secret, 42)\n(Pdb) p secret\n42\n(Pdb) c\nok "
                              (testserver-test--results))))))

(ert-deftest testserver-test-quitting-the-prompt-cancels-the-test ()
  (let ((testserver-read-input-function (lambda (_prompt _test-id) (signal 'quit nil))))
    (testserver-test--in-file "edemo/test_debug.py"
      (testserver-test--goto "input(")
      (let-alist (testserver-test--run-and-wait #'testserver-run-test-at-point)
        (should (equal (list .status .ok) '("cancelled" nil))))
      (should (string-match-p
               "^FAIL edemo\\.test_debug\\.Debug\\.test_input (edemo/test_debug\\.py:10)$"
               (testserver-test--results))))))

(provide 'testserver-test)
;;; testserver-test.el ends here
