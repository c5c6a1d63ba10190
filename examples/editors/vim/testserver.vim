" testserver.vim - run Python tests on a warm testserver, results in the quickfix list.
"
" Needs Vim 8.1 or newer with +job and +channel (Vim's job_start; Neovim's jobstart is not
" supported). One `testserver bridge` process per project is started on first use and kept:
" the server imports the tests once and reloads changed modules before each run.
"
"   :TestserverStart        start the project's bridge now (it says loading, then ready)
"   :TestserverRunNearest   the test method, class or module at the cursor
"   :TestserverRunFile      the tests of this file
"   :TestserverRunAll       every test of the project
"   :TestserverRunLast      the last selection again
"   :TestserverCancel       cancel the running test
"   :TestserverStop         stop the project's bridge
"
" Options (set them before the commands are used):
"   g:testserver_command      ['testserver'], or $TESTSERVER_COMMAND split on spaces
"   g:testserver_args         ['-t', '.', '-s', '.']: the server's loading arguments
"   g:testserver_root_markers ['.git', 'pyproject.toml', 'setup.py', 'setup.cfg']
"   g:testserver_run_on_save  0: 1 runs a test file's tests when it is written
"   g:testserver_input        'input': the name of the function that reads the line a
"                             waiting test gets (called with the prompt)
"
" The bridge echoes "loading" when it starts and "ready, N tests" (and any module that
" failed to import) once its server has loaded them; TestserverState() says which.
"
" When a test waits for input (breakpoint(), input()), its recent output is shown as the
" prompt of input(): type pdb commands (p x, n, c); CTRL-C cancels the test.

if exists('g:loaded_testserver') || !has('job') || !has('channel')
  finish
endif
let g:loaded_testserver = 1

let g:testserver_command = get(g:, 'testserver_command',
      \ empty($TESTSERVER_COMMAND) ? ['testserver'] : split($TESTSERVER_COMMAND))
let g:testserver_args = get(g:, 'testserver_args', ['-t', '.', '-s', '.'])
let g:testserver_root_markers = get(g:, 'testserver_root_markers',
      \ ['.git', 'pyproject.toml', 'setup.py', 'setup.cfg'])
let g:testserver_run_on_save = get(g:, 'testserver_run_on_save', 0)
let g:testserver_input = get(g:, 'testserver_input', 'input')

let s:jobs = {}       " project root -> bridge job
let s:runs = {}       " project root -> {'items': [...], 'output': '', 'last': [...]}
let s:next_id = 0
let s:states = {}     " project root -> 'loading' | 'ready'
let s:stderr = []     " the bridges' last diagnostics

" -- project, module and test ids -------------------------------------------------------

function! s:Root() abort
  let dir = expand('%:p:h')
  while 1
    for marker in g:testserver_root_markers
      if isdirectory(dir . '/' . marker) || filereadable(dir . '/' . marker)
        return dir
      endif
    endfor
    let parent = fnamemodify(dir, ':h')
    if parent ==# dir
      return getcwd()
    endif
    let dir = parent
  endwhile
endfunction

function! s:Module(root) abort
  let relative = expand('%:p:r')[len(a:root) + 1:]
  let parts = split(relative, '/')
  if !empty(parts) && parts[-1] ==# '__init__'
    call remove(parts, -1)
  endif
  return join(parts, '.')
endfunction

" The enclosing class and def names, outermost first, found by indentation.
function! s:Enclosing() abort
  let found = []
  let limit = 1000
  for lnum in range(line('.'), 1, -1)
    let text = getline(lnum)
    if text =~# '^\s*\(#.*\)\?$'
      continue
    endif
    let indent = indent(lnum)
    if indent >= limit
      continue
    endif
    let limit = indent
    let match = matchlist(text, '^\s*\%(async\s\+\)\?\(class\|def\)\s\+\(\w\+\)')
    if !empty(match)
      call insert(found, [match[1], match[2]])
    endif
    if indent == 0
      break
    endif
  endfor
  return found
endfunction

" The test at the cursor: module, then its classes, then one method.
function! s:Nearest(root) abort
  let names = [s:Module(a:root)]
  let inside_class = 0
  for [kind, name] in s:Enclosing()
    if kind ==# 'class'
      call add(names, name)
      let inside_class = 1
    else
      if inside_class
        call add(names, name)
      endif
      break
    endif
  endfor
  return join(names, '.')
endfunction

" -- the bridge -------------------------------------------------------------------------

function! s:Job(root) abort
  let job = get(s:jobs, a:root, v:null)
  if job isnot v:null && job_status(job) ==# 'run'
    return job
  endif
  let job = job_start(g:testserver_command + ['bridge'] + g:testserver_args, {
        \ 'cwd': a:root,
        \ 'in_mode': 'nl',
        \ 'out_mode': 'nl',
        \ 'out_cb': function('s:OnLine', [a:root]),
        \ 'err_cb': function('s:OnStderr'),
        \ 'exit_cb': function('s:OnExit', [a:root]),
        \ })
  if job_status(job) !=# 'run'
    echoerr 'testserver: cannot start ' . join(g:testserver_command) . ' bridge'
  endif
  let s:states[a:root] = 'loading'
  echo 'testserver: loading the tests of ' . a:root . '...'
  let s:jobs[a:root] = job
  return job
endfunction

function! s:Send(root, command) abort
  call ch_sendraw(job_getchannel(s:Job(a:root)), json_encode(a:command) . "\n")
endfunction

function! s:Run(tests) abort
  let root = s:Root()
  let s:next_id += 1
  let s:runs[root] = {'items': [], 'output': '', 'last': a:tests}
  call s:Send(root, {'id': 'vim-' . s:next_id, 'command': 'run', 'tests': a:tests})
endfunction

function! s:RunLast() abort
  let root = s:Root()
  call s:Run(get(get(s:runs, root, {}), 'last', []))
endfunction

function! s:Command(name) abort
  let root = s:Root()
  if has_key(s:jobs, root) && job_status(s:jobs[root]) ==# 'run'
    call s:Send(root, {'command': a:name})
  endif
endfunction

" -- events -----------------------------------------------------------------------------

function! s:OnLine(root, channel, line) abort
  try
    let event = json_decode(a:line)
  catch
    return
  endtry
  let run = get(s:runs, a:root, {'items': [], 'output': '', 'last': []})
  let s:runs[a:root] = run
  let kind = get(event, 'event', '')
  if kind ==# 'ready'
    let s:states[a:root] = 'ready'
    for failure in event.load_errors
      echomsg printf('testserver: cannot import %s: %s', failure.module, failure.message)
    endfor
    echo printf('testserver: ready, %d tests', event.tests)
      \ . (empty(event.load_errors) ? '' : printf(', %d failed to import', len(event.load_errors)))
  elseif kind ==# 'start'
    let run.items = []
    echo printf('testserver: running %d test(s)', event.tests)
  elseif kind ==# 'test' && index(['fail', 'uxsuccess'], event.status) >= 0
    call add(run.items, s:Item(a:root, event))
  elseif kind ==# 'test-output'
    let run.output .= event.text
  elseif kind ==# 'stdin-wanted'
    call timer_start(0, function('s:Answer', [a:root, run.output]))
    let run.output = ''
  elseif kind ==# 'summary'
    call setqflist([], 'r', {'title': 'testserver: ' . event.text, 'items': run.items})
    if empty(run.items)
      cclose
    else
      copen
      wincmd p
    endif
    echo 'testserver: ' . event.text . (event.ok ? ' OK' : ' FAILED')
  elseif kind ==# 'message' || kind ==# 'error'
    echomsg 'testserver: ' . get(event, 'text', get(event, 'message', ''))
  endif
endfunction

" A quickfix entry for a failed test: at the deepest traceback frame in the project, else
" at the test's definition.
function! s:Item(root, event) abort
  let attachments = get(a:event, 'attachments', {})
  let details = get(attachments, 'traceback', get(attachments, 'reason', ''))
  let item = {'filename': a:event.file, 'lnum': a:event.line, 'type': 'E'}
  for frame in split(details, "\n")
    let match = matchlist(frame, '^\s*File "\(.\{-}\)", line \(\d\+\)')
    if !empty(match) && stridx(match[1], a:root . '/') == 0
      let item.filename = match[1]
      let item.lnum = str2nr(match[2])
    endif
  endfor
  let lines = filter(split(details, "\n"), 'v:val =~# "\\S"')
  let headline = empty(lines) ? a:event.status : trim(lines[-1])
  let item.text = a:event.test_id . ': ' . headline
  if item.filename is v:null
    let item.filename = ''
  endif
  if item.lnum is v:null
    let item.lnum = 0
  endif
  return item
endfunction

function! s:Answer(root, shown, timer) abort
  let lines = split(a:shown, "\n", 1)
  let prompt = join(lines[max([0, len(lines) - 15]):], "\n")
  call inputsave()
  try
    let answer = call(g:testserver_input, [prompt])
  catch /^Vim:Interrupt$/
    call s:Send(a:root, {'command': 'cancel'})
    return
  finally
    call inputrestore()
  endtry
  call s:Send(a:root, {'command': 'stdin', 'data': answer . "\n"})
endfunction

function! s:OnStderr(channel, line) abort
  call add(s:stderr, a:line)
  if len(s:stderr) > 50
    call remove(s:stderr, 0)
  endif
endfunction

function! s:OnExit(root, job, status) abort
  if get(s:jobs, a:root, v:null) is a:job
    call remove(s:jobs, a:root)
    call remove(s:states, a:root)
  endif
  if a:status != 0
    echomsg printf('testserver: the bridge for %s exited with status %d: %s',
          \ a:root, a:status, join(s:stderr[-3:], ' | '))
  endif
endfunction

" -- commands ---------------------------------------------------------------------------

" 'loading', 'ready' or '' (no bridge) for the current project: for 'statusline',
" e.g. set statusline+=%{TestserverState()}
function! TestserverState() abort
  return get(s:states, s:Root(), '')
endfunction

command! TestserverStart call s:Job(s:Root())
command! TestserverRunNearest call s:Run([s:Nearest(s:Root())])
command! TestserverRunFile call s:Run([s:Module(s:Root())])
command! TestserverRunAll call s:Run([])
command! TestserverRunLast call s:RunLast()
command! TestserverCancel call s:Command('cancel')
command! TestserverStop call s:Command('quit')

augroup testserver
  autocmd!
  autocmd BufWritePost test*.py if g:testserver_run_on_save | TestserverRunFile | endif
augroup END
